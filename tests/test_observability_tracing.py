"""OpenTelemetry traces with the real SDK: a FastAPI request under real uvicorn through
``Jobs.enqueue`` to the worker's run (in-process worker sharing the test's provider, an
in-memory exporter), failures, cron runs, and the zero-code ``opentelemetry-instrument``
path (a real worker process whose console exporter prints its spans as JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import domainjobs
from domainjobs import observability
from domainjobs.observability.tracing import CARRIER_KEY
from tests.conftest import EXAMPLES
from tests.servers import free_port

SHOP = EXAMPLES / "shop"
BIN = Path(sys.executable).parent

FLAKY_TASKS = """
from domainjobs import task

@task(retries=2)
async def always_fails(ctx, n: int) -> None:
    raise RuntimeError(f"card declined {n}")

@task
async def fine(ctx) -> str:
    return "ok"
"""

CRON_EVERY_SECOND = """
from domainjobs import cron

@cron("* * * * * *")
async def tick(ctx) -> None:
    return None
"""


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observability.enable_tracing(provider)
    yield provider, exporter
    observability.disable_tracing()
    provider.shutdown()


@pytest.fixture
def shop_path(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(SHOP))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(SHOP)
    monkeypatch.setenv("SHOP_ACCOUNTS_DB", str(tmp_path / "accounts.sqlite3"))


async def poll(predicate, timeout: float = 30.0, what: str = "condition"):
    """Await until ``predicate()`` is truthy (a poll with a deadline, on the event loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_one_trace_from_a_fastapi_request_through_enqueue_to_the_run(
    spans, shop_path, redis_url
):
    provider, exporter = spans
    from fastapi_otel_app import make_app

    app = make_app(provider, in_process_workers=True, url=redis_url)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await poll(lambda: server.started or serving.done(), what="uvicorn to start")
        assert not serving.done(), "uvicorn did not start"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = await client.post("/invoices", json={"order_id": 7, "amount_cents": 1250})
            assert response.status_code == 202, response.text
            key = response.json()["key"]
            await poll(lambda: named(exporter, "process billing"), what="the job's run span")
            assert (await client.get(f"/jobs/{key}")).json()["status"] == "complete"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)

    [server_span] = [
        s
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.SERVER and "invoices" in s.name
    ]
    [publish] = named(exporter, "publish billing")
    [process] = named(exporter, "process billing")
    trace_id = server_span.context.trace_id
    assert publish.context.trace_id == process.context.trace_id == trace_id
    # the producer span is a child of the request's span, the run a child of the producer
    assert publish.parent is not None and publish.parent.span_id == server_span.context.span_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert process.parent.is_remote  # it came through the job, not through the event loop
    assert publish.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    for span, operation in ((publish, "publish"), (process, "process")):
        attributes = dict(span.attributes or {})
        assert attributes["messaging.system"] == "saq"
        assert attributes["messaging.destination.name"] == "billing"
        assert attributes["messaging.operation.name"] == operation
        assert attributes["messaging.message.id"] == key
        assert attributes["domainjobs.task"] == "billing.create_invoice"
        assert attributes["domainjobs.domain"] == "billing"
    assert process.attributes["domainjobs.attempt"] == 1
    assert process.attributes["domainjobs.job.status"] == "complete"
    assert process.status.status_code == StatusCode.UNSET
    # the run happened within the request's trace, after its enqueue
    assert process.start_time >= publish.start_time


async def test_a_failing_job_records_the_exception_and_sets_error_on_every_attempt(
    spans, make_app, redis_url
):
    provider, exporter = spans
    app = make_app({"app/domain/pay/jobs/tasks.py": FLAKY_TASKS})
    registry = domainjobs.discover(f"{app.name}.domain")
    workers = domainjobs.build_workers(registry, url=redis_url)
    stop = asyncio.Event()
    running = asyncio.create_task(domainjobs.run_workers(workers, handle_signals=False, stop=stop))
    try:
        async with domainjobs.Jobs(registry, url=redis_url) as jobs:
            with provider.get_tracer("test").start_as_current_span("checkout") as checkout:
                handle = await jobs.enqueue("pay.always_fails", n=7)
            await poll(
                lambda: len(named(exporter, "process default")) == 2, what="two attempts' spans"
            )
            assert (await handle.refresh()).status.value == "failed"
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 30) == 0

    first, second = sorted(named(exporter, "process default"), key=lambda s: s.start_time)
    trace_id = checkout.get_span_context().trace_id
    [publish] = named(exporter, "publish default")
    for span, attempt, status in ((first, 1, "retried"), (second, 2, "failed")):
        assert span.context.trace_id == trace_id
        assert span.parent.span_id == publish.context.span_id  # each attempt: same producer
        assert span.attributes["domainjobs.attempt"] == attempt
        assert span.attributes["domainjobs.job.status"] == status
        assert span.status.status_code == StatusCode.ERROR
        assert "card declined 7" in (span.status.description or "")
        [event] = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "RuntimeError"
        assert event.attributes["exception.message"] == "card declined 7"


async def test_cron_runs_start_their_own_trace(spans, make_app, redis_url):
    provider, exporter = spans
    app = make_app({"app/domain/clock/jobs/scheduled.py": CRON_EVERY_SECOND})
    registry = domainjobs.discover(f"{app.name}.domain")
    # the workers even start inside a span: a tick must not join that trace
    with provider.get_tracer("test").start_as_current_span("deploy") as ambient:
        workers = domainjobs.build_workers(registry, url=redis_url)
        stop = asyncio.Event()
        running = asyncio.create_task(
            domainjobs.run_workers(workers, handle_signals=False, stop=stop)
        )
    try:
        await poll(lambda: len(named(exporter, "process default")) >= 2, what="two cron runs")
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 30) == 0
    runs = named(exporter, "process default")[:2]
    for span in runs:
        assert span.parent is None, "a cron run is the root of its own trace"
        assert span.attributes["domainjobs.task"] == "clock.tick"
        assert span.attributes["messaging.message.id"].startswith("cron:clock.tick:")
        assert span.context.trace_id != ambient.get_span_context().trace_id
    assert runs[0].context.trace_id != runs[1].context.trace_id
    assert not named(exporter, "publish default")  # the scheduler is not Jobs.enqueue


async def test_the_context_is_in_job_meta_where_litestar_saq_reads_it(spans, shop_path, redis_url):
    _, exporter = spans
    litestar_instrumentation = pytest.importorskip("litestar_saq.instrumentation")
    async with domainjobs.Jobs("app.domain", url=redis_url) as jobs:
        handle = await jobs.enqueue("billing.charge", invoice_id=1)
        stored = await (await jobs.queue("billing")).job(handle.key)
    [publish] = named(exporter, "publish billing")
    assert stored is not None and "traceparent" in stored.meta[CARRIER_KEY]
    context = litestar_instrumentation.extract_trace_context(stored)
    from opentelemetry import trace

    remote = trace.get_current_span(context).get_span_context()
    assert remote.trace_id == publish.context.trace_id
    assert remote.span_id == publish.context.span_id


async def test_tracing_off_leaves_jobs_untouched(shop_path, redis_url):
    assert not observability.tracing_enabled()
    async with domainjobs.Jobs("app.domain", url=redis_url) as jobs:
        handle = await jobs.enqueue("billing.charge", invoice_id=1)
        stored = await (await jobs.queue("billing")).job(handle.key)
    assert stored is not None and CARRIER_KEY not in (stored.meta or {})


async def test_the_instrumentor_is_registered_and_turns_tracing_on_and_off(shop_path, redis_url):
    [entry] = entry_points(group="opentelemetry_instrumentor", name="domainjobs")
    instrumentor_class = entry.load()
    from domainjobs.observability.instrumentor import DomainjobsInstrumentor

    assert instrumentor_class is DomainjobsInstrumentor
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = DomainjobsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert observability.tracing_enabled()
        async with domainjobs.Jobs("app.domain", url=redis_url) as jobs:
            await jobs.enqueue("billing.charge", invoice_id=1)
            assert len(named(exporter, "publish billing")) == 1
            instrumentor.uninstrument()
            assert not observability.tracing_enabled()
            await jobs.enqueue("billing.charge", invoice_id=2)
        assert len(named(exporter, "publish billing")) == 1
    finally:
        instrumentor.uninstrument()


def console_spans(text: str) -> list[dict]:
    """The JSON objects OpenTelemetry's console exporter printed, one after another."""
    decoder = json.JSONDecoder()
    found, index = [], 0
    while True:
        start = text.find("{", index)
        if start < 0:
            return found
        value, index = decoder.raw_decode(text, start)
        found.append(value)


def test_opentelemetry_instrument_traces_a_worker_process_with_no_code(
    spans, shop_path, redis_url, tmp_path
):
    provider, exporter = spans
    instrument = BIN / "opentelemetry-instrument"
    if not instrument.exists():
        pytest.skip("opentelemetry-instrumentation's script is not installed")

    async def enqueue() -> str:
        async with domainjobs.Jobs("app.domain", url=redis_url) as jobs:
            with provider.get_tracer("test").start_as_current_span("request"):
                return (await jobs.enqueue("billing.charge", invoice_id=4)).key

    key = asyncio.run(enqueue())
    env = {
        **os.environ,
        "DOMAINJOBS_URL": redis_url,
        "OTEL_SERVICE_NAME": "shop-worker",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    result = subprocess.run(
        [str(instrument), sys.executable, "-m", "domainjobs", "run", "--burst"],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [run] = [s for s in console_spans(result.stdout) if s["name"] == "process billing"]
    [publish] = named(exporter, "publish billing")
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["context"]["trace_id"] == f"0x{publish.context.trace_id:032x}"
    assert run["parent_id"] == f"0x{publish.context.span_id:016x}"
    assert run["attributes"]["messaging.message.id"] == key
    assert run["attributes"]["domainjobs.domain"] == "billing"
    assert run["resource"]["attributes"]["service.name"] == "shop-worker"
