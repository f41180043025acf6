"""Prometheus metrics of jobs with the real prometheus-client and real Redis: per-task
counters and histograms from real workers, queue gauges read from the broker at scrape
time, ``/metrics`` on the web UI (``run --web``) and on ``run --metrics-port`` with
``--processes 2`` (one scrape sees every child), and nothing of either extra imported
when it is not turned on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("prometheus_client")

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from saq.job import Status

import domainjobs
from domainjobs import observability
from domainjobs.brokers.urls import queue_from_url
from domainjobs.observability.exposition import QueueGauges, render
from tests.conftest import run_cli
from tests.runapps import Running, enqueue, work_app
from tests.servers import free_port, wait_for

PAY_TASKS = """
import asyncio
from domainjobs import task

@task
async def fine(ctx) -> str:
    return "ok"

@task(retries=2)
async def always_fails(ctx) -> None:
    raise RuntimeError("card declined")

@task(queue="slow")
async def hangs(ctx) -> None:
    await asyncio.sleep(600)
"""

CRON_EVERY_SECOND = """
from domainjobs import cron

@cron("* * * * * *")
async def tick(ctx) -> None:
    return None
"""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, keyed by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(page: dict, name: str, **labels: str) -> float | None:
    return page.get((name, frozenset(labels.items())))


async def poll(predicate, timeout: float = 30.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    own = CollectorRegistry()
    observability.enable_metrics(own)
    yield own
    observability.disable_metrics()


async def test_workers_count_and_time_jobs_by_task_domain_queue_and_status(
    registry, make_app, redis_url
):
    app = make_app(
        {
            "app/domain/pay/jobs/tasks.py": PAY_TASKS,
            "app/domain/clock/jobs/scheduled.py": CRON_EVERY_SECOND,
        }
    )
    found = domainjobs.discover(f"{app.name}.domain")
    async with domainjobs.Jobs(found, url=redis_url) as jobs:
        waited = await jobs.enqueue("pay.fine")  # queued before any worker runs
        await asyncio.sleep(0.3)  # the wait being measured, not a synchronisation
        workers = domainjobs.build_workers(found, url=redis_url)
        stop = asyncio.Event()
        running = asyncio.create_task(
            domainjobs.run_workers(workers, handle_signals=False, stop=stop)
        )
        try:
            await jobs.apply("pay.fine")
            await jobs.apply("pay.fine")
            with pytest.raises(domainjobs.JobFailedError):
                await jobs.with_options(wait_timeout=30).apply("pay.always_fails")
            hanging = await jobs.enqueue("pay.hangs")
            await poll(lambda: registry.get_sample_value(
                "domainjobs_job_wait_seconds_count",
                {"task": "pay.hangs", "domain": "pay", "queue": "slow"},
            ), what="the hanging job to start")  # fmt: skip
            await hanging.abort("no longer needed")

            def tick_counted() -> float | None:
                labels = {"task": "clock.tick", "domain": "clock", "queue": "default"}
                return registry.get_sample_value("domainjobs_cron_lag_seconds_count", labels)

            await poll(tick_counted, what="a cron run")
            await poll(lambda: registry.get_sample_value(
                "domainjobs_jobs_finished_total",
                {"task": "pay.hangs", "domain": "pay", "queue": "slow", "status": "aborted"},
            ), what="the abort to be counted")  # fmt: skip
            assert (await waited.refresh()).status.value == "complete"
        finally:
            stop.set()
            assert await asyncio.wait_for(running, 30) == 0

    def get(name: str, task: str, queue: str = "default", **labels: str) -> float | None:
        domain = task.split(".")[0]
        full = {"task": task, "domain": domain, "queue": queue, **labels}
        return registry.get_sample_value(name, full)

    assert get("domainjobs_jobs_finished_total", "pay.fine", status="complete") == 3
    assert get("domainjobs_job_run_seconds_count", "pay.fine") == 3
    assert get("domainjobs_job_wait_seconds_count", "pay.fine") == 3
    assert get("domainjobs_job_wait_seconds_sum", "pay.fine") >= 0.3  # the one that waited
    assert get("domainjobs_jobs_finished_total", "pay.always_fails", status="failed") == 1
    assert get("domainjobs_job_retries_total", "pay.always_fails") == 1
    assert get("domainjobs_job_run_seconds_count", "pay.always_fails") == 2  # each attempt
    assert get("domainjobs_job_wait_seconds_count", "pay.always_fails") == 1  # first only
    assert get("domainjobs_jobs_finished_total", "pay.hangs", "slow", status="aborted") == 1
    assert get("domainjobs_job_retries_total", "pay.fine") is None  # never retried: no series
    assert get("domainjobs_jobs_finished_total", "clock.tick", status="complete") >= 1
    lag = get("domainjobs_cron_lag_seconds_sum", "clock.tick")
    assert lag is not None and 0 <= lag < 30
    assert get("domainjobs_cron_lag_seconds_count", "pay.fine") is None  # not a cron task


async def test_queue_gauges_are_read_from_the_broker_at_scrape_time(registry, redis_url):
    queue = queue_from_url(redis_url, "mail")
    await queue.connect()
    down = queue_from_url(f"redis://127.0.0.1:{free_port()}", "elsewhere")
    try:
        await queue.enqueue("mail.send")
        failed = await queue.dequeue(timeout=5)
        assert failed is not None
        await failed.finish(Status.FAILED, error="boom")
        for _ in range(3):
            await queue.enqueue("mail.send")
        await queue.enqueue("mail.send", scheduled=int(time.time()) + 3600)
        body, content_type = await render(QueueGauges([queue, down]))
    finally:
        await queue.disconnect()
    assert content_type.startswith("text/plain")
    page = samples(body.decode())
    jobs = "domainjobs_queue_jobs"
    assert value(page, jobs, queue="mail", status="queued") == 3
    assert value(page, jobs, queue="mail", status="scheduled") == 1
    assert value(page, jobs, queue="mail", status="active") == 0
    assert value(page, jobs, queue="mail", status="failed") == 1
    assert value(page, "domainjobs_queue_workers", queue="mail") == 0
    assert value(page, "domainjobs_queue_up", queue="mail") == 1
    # a broker that does not answer is reported, and the scrape still succeeds
    assert value(page, "domainjobs_queue_up", queue="elsewhere") == 0
    assert value(page, jobs, queue="elsewhere", status="queued") is None


def test_nothing_of_either_extra_is_imported_unless_turned_on(make_app, redis_url):
    app = work_app(make_app)
    enqueue(redis_url, "work.noop", 2)
    script = textwrap.dedent(
        f"""
        import json, sys

        def extras():
            return {{m for m in sys.modules
                    if m.split(".")[0] in ("opentelemetry", "prometheus_client")}}

        import redis.asyncio, saq  # what our dependencies import of OpenTelemetry themselves
        before = extras()
        import domainjobs, domainjobs.observability, domainjobs.web, domainjobs.lifespan
        from domainjobs.cli import main
        code = main(["run", "--burst", "--url", {redis_url!r}, "--roots", "{app.name}.domain",
                     "--app-dir", {str(app.parent)!r}])
        ours = sorted(m for m in sys.modules if m.startswith("domainjobs.observability."))
        print(json.dumps({{"code": code, "loaded": sorted(extras() - before), "ours": ours}}))
        """
    )
    env = {**os.environ, "TEST_REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0, result.stderr
    assert outcome["loaded"] == [], result.stderr
    heavy = {"tracing", "metrics", "exposition", "server", "instrumentor"}
    assert not {m.rsplit(".", 1)[1] for m in outcome["ours"]} & heavy, outcome["ours"]
    assert result.stderr.count("job work.noop complete") == 2  # the jobs did run


def test_a_busy_metrics_port_is_one_sentence_and_exit_2(make_app, redis_url):
    app = make_app({"app/domain/pay/jobs/tasks.py": PAY_TASKS})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(
            "run", "--url", redis_url, "--roots", f"{app.name}.domain",
            "--app-dir", str(app.parent), "--metrics-port", str(port),
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "pick another --metrics-port" in result.stderr
    assert "Traceback" not in result.stderr


def scrape(port: int) -> dict:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return samples(response.text)


def scrape_until(port: int, check, what: str) -> dict:
    """Scrape ``/metrics`` until ``check(page)`` holds; the last page."""
    pages = []

    def ready() -> bool:
        pages.append(scrape(port))
        return bool(check(pages[-1]))

    wait_for(ready, timeout=30, interval=0.2, what=what)
    return pages[-1]


def finished(page: dict, task: str, status: str = "complete", queue: str = "default") -> float:
    labels = {"task": task, "domain": task.split(".")[0], "queue": queue, "status": status}
    return value(page, "domainjobs_jobs_finished_total", **labels) or 0


def test_the_web_ui_serves_metrics_of_its_workers(make_app, redis_url):
    app = work_app(make_app)
    port = free_port()
    enqueue(redis_url, "work.noop", 5)
    with Running(["--web", "--port", str(port)], app, redis_url) as run:
        run.wait_log("web UI on")

        def check(page: dict) -> bool:  # the worker registers itself on its first upkeep
            workers = value(page, "domainjobs_queue_workers", queue="default")
            return finished(page, "work.noop") == 5 and workers == 1

        page = scrape_until(port, check, "five jobs and the worker at /metrics")
        assert value(page, "domainjobs_queue_jobs", queue="default", status="queued") == 0
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log


def test_processes_2_one_scrape_counts_the_jobs_of_every_child(make_app, redis_url, tmp_path):
    app = work_app(make_app)
    prefix = app.name
    port = free_port()
    client = redis.Redis.from_url(redis_url)
    args = ["--processes", "2", "--concurrency", "2", "--max-jobs", "15"]
    temp = tmp_path / "temp"  # where the supervisor makes its metrics folder
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    with Running([*args, "--metrics-port", str(port)], app, redis_url, env=env) as run:
        run.wait_log("started (pid", count=2)
        run.wait_log("metrics on http://127.0.0.1:")
        [folder] = temp.glob("domainjobs-metrics-*")
        enqueue(redis_url, "work.sleepy", 40, seconds=0.05)
        enqueue(redis_url, "work.boom", 3)
        wait_for(lambda: client.llen(f"{prefix}:done") == 40, timeout=60, what="all jobs")
        check = lambda page: finished(page, "work.boom", "failed") == 3  # noqa: E731
        page = scrape_until(port, check, "the failures counted")
        pids = {entry.decode().split(":")[1] for entry in client.lrange(f"{prefix}:started", 0, -1)}
        assert len(pids) >= 2, "the jobs ran in more than one process"
        # every job counted once, whichever child ran it (children recycled after
        # --max-jobs included: their samples stay in the shared folder)
        assert finished(page, "work.sleepy") == 40
        assert value(page, "domainjobs_job_run_seconds_count", task="work.sleepy",
                     domain="work", queue="default") == 40  # fmt: skip
        assert value(page, "domainjobs_queue_workers", queue="default") >= 2
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    assert "recycled" in run.log
    assert not folder.exists(), "the supervisor removes the metrics folder it made"


WRITER = """
import asyncio, sys
from saq.job import Job, Status
from domainjobs.observability.metrics import JobMetrics

metrics = JobMetrics()
before, after = metrics.job_hooks({"pay.fine": "pay", "pay.boom": "pay"})

async def run(function, status, seconds):
    job = Job(function=function, queued=1000, started=1000 + int(seconds * 1000), attempts=1)
    job.status = status
    ctx = {"job": job}
    await before(ctx)
    await after(ctx)

async def main():
    for i in range(int(sys.argv[1])):
        await run("pay.fine", Status.COMPLETE, 0.01 * i)
        await run("pay.boom", Status.FAILED if i % 2 else Status.QUEUED, 2.0)

asyncio.run(main())
"""

COMPARE = """
import json, sys
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry
from domainjobs.observability.encoding import MultiProcessSamples

registry = CollectorRegistry()
MultiProcessCollector(registry)
print(json.dumps({"theirs": generate_latest(registry).decode(),
                  "ours": MultiProcessSamples(sys.argv[1]).encode()}))
"""


def without_created(text: str) -> dict:
    return {k: v for k, v in samples(text).items() if not k[0].endswith("_created")}


def test_our_encoders_read_the_same_samples_as_prometheus_client(registry, tmp_path):
    from prometheus_client import generate_latest

    from domainjobs.observability.encoding import TextEncoder

    # one process: the registry's samples
    asyncio.run(_run_writer_in_process())
    ours = TextEncoder().encode(registry.collect())
    assert without_created(ours) == without_created(generate_latest(registry).decode())
    assert "_created" not in ours
    # several processes: two writers' files, summed
    folder = tmp_path / "multiproc"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", WRITER, str(count)], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", COMPARE, str(folder)],
        env=env, check=True, timeout=60, capture_output=True, text=True,
    )  # fmt: skip
    pages = json.loads(out.stdout)
    theirs, ours_multi = without_created(pages["theirs"]), without_created(pages["ours"])
    assert ours_multi == theirs
    labels = {"task": "pay.fine", "domain": "pay", "queue": "", "status": "complete"}
    labels = frozenset(labels.items())
    assert ours_multi[("domainjobs_jobs_finished_total", labels)] == 7  # 3 + 4 runs summed


async def _run_writer_in_process() -> None:
    from saq.job import Job

    metrics = observability.enable_metrics()
    before, after = metrics.job_hooks({"pay.fine": "pay"})
    for i in range(5):
        job = Job(function="pay.fine", queued=1000, started=1000 + i * 7, attempts=1)
        job.status = Status.COMPLETE if i % 2 else Status.FAILED
        ctx = {"job": job}
        await before(ctx)
        await after(ctx)


def test_the_documented_alert_rules_are_the_shipped_file():
    root = Path(__file__).resolve().parent.parent / "docs"
    rules = (root / "prometheus" / "domainjobs-alerts.yml").read_text()
    assert "```yaml\n" + rules + "```" in (root / "observability.md").read_text()


async def test_the_metrics_port_answers_plain_http(registry):
    from domainjobs.observability.cli import bind
    from domainjobs.observability.server import MetricsServer

    server = MetricsServer(bind("127.0.0.1", 0), None)
    port = server.sock.getsockname()[1]
    stop = asyncio.Event()
    serving = asyncio.create_task(server.serve(stop))

    async def ask(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer

    try:
        ok = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
        assert f"Content-Length: {len(body)}".encode() in head
        assert b"# TYPE domainjobs_queue_jobs gauge" in body
        assert (await ask(b"HEAD /metrics HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")
        assert (await ask(b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await ask(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await ask(b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert server.scrapes == 2
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)


def distinct_ports(count: int) -> list[int]:
    """``count`` different free ports (``free_port`` twice may give the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_metrics_port_setting_from_pyproject_and_the_environment_the_flag_wins(
    make_app, redis_url
):
    app = work_app(make_app)
    from_file, from_env, from_flag = distinct_ports(3)
    (app.parent / "pyproject.toml").write_text(f"[tool.domainjobs]\nmetrics_port = {from_file}\n")
    # pyproject.toml alone
    enqueue(redis_url, "work.noop", 3)
    with Running([], app, redis_url) as run:
        run.wait_log(f"metrics on http://127.0.0.1:{from_file}/metrics", timeout=90)
        page = scrape_until(from_file, lambda p: finished(p, "work.noop") == 3, "3 jobs")
        assert value(page, "domainjobs_queue_jobs", queue="default", status="queued") == 0
        run.signal(signal.SIGTERM)
        assert run.wait(90) == 0, run.log
    # the environment beats pyproject.toml; with --processes 2 only the supervisor serves
    # it (the children get every setting in their environment, and must not bind it too)
    env = {"DOMAINJOBS_METRICS_PORT": str(from_env)}
    with Running(["--processes", "2"], app, redis_url, env=env) as run:
        run.wait_log("started (pid", count=2, timeout=90)
        run.wait_log(f"metrics on http://127.0.0.1:{from_env}/metrics", timeout=90)
        enqueue(redis_url, "work.noop", 4)
        page = scrape_until(from_env, lambda p: finished(p, "work.noop") == 4, "4 jobs")
        assert not listening(from_file)
        run.signal(signal.SIGTERM)
        assert run.wait(90) == 0, run.log
    assert run.log.count("metrics on http://") == 1, run.log
    assert "cannot serve metrics" not in run.log and "restart" not in run.log, run.log
    # the flag beats both
    with Running(["--metrics-port", str(from_flag)], app, redis_url, env=env) as run:
        run.wait_log(f"metrics on http://127.0.0.1:{from_flag}/metrics", timeout=90)
        scrape(from_flag)
        assert not listening(from_env) and not listening(from_file)
        run.signal(signal.SIGTERM)
        assert run.wait(90) == 0, run.log


def test_web_only_serves_the_metrics_port_too(make_app, redis_url):
    app = work_app(make_app)
    web_port, metrics_port = distinct_ports(2)
    enqueue(redis_url, "work.noop", 4)  # no worker runs: they stay queued
    args = ["--web-only", "--port", str(web_port), "--metrics-port", str(metrics_port)]
    with Running(args, app, redis_url) as run:
        run.wait_log(f"metrics on http://127.0.0.1:{metrics_port}/metrics", timeout=90)
        run.wait_log("web UI on", timeout=90)
        page = scrape(metrics_port)
        assert value(page, "domainjobs_queue_jobs", queue="default", status="queued") == 4
        assert value(page, "domainjobs_queue_workers", queue="default") == 0
        assert value(page, "domainjobs_queue_up", queue="default") == 1
        assert httpx.get(f"http://127.0.0.1:{web_port}/", timeout=10).status_code == 200
        run.signal(signal.SIGTERM)
        assert run.wait(90) == 0, run.log
    assert not listening(metrics_port)
    assert "job work.noop" not in run.log  # --web-only runs no job


def test_a_bad_metrics_port_setting_is_one_sentence_from_check_and_run(make_app):
    app = make_app({"app/domain/pay/jobs/tasks.py": PAY_TASKS})
    where = ["--roots", f"{app.name}.domain", "--app-dir", str(app.parent)]
    for bad in ("x", "70000", "-1"):
        env = {"DOMAINJOBS_METRICS_PORT": bad}
        for command in ("check", "run"):
            result = run_cli(command, *where, "--url", "redis://127.0.0.1:1/0", env=env)
            assert result.returncode == 2, result.stderr
            assert result.stderr.strip() == (
                "error: environment variable DOMAINJOBS_METRICS_PORT: metrics_port must be "
                f"a port number 0-65535, got {bad!r}"
            ), result.stderr
    (app.parent / "pyproject.toml").write_text('[tool.domainjobs]\nmetrics_port = "lots"\n')
    result = run_cli("check", *where)
    assert result.returncode == 2
    assert "[tool.domainjobs]: metrics_port must be a port number 0-65535, got 'lots'" in (
        result.stderr
    )
    # a good one passes check, which never binds it (even when it is taken right now)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        (app.parent / "pyproject.toml").write_text(f"[tool.domainjobs]\nmetrics_port = {port}\n")
        result = run_cli("check", *where)
    assert result.returncode == 0, result.stderr


def test_a_metrics_port_without_the_extra_is_refused_by_check_and_run(make_app):
    app = make_app({"app/domain/pay/jobs/tasks.py": PAY_TASKS})
    (app.parent / "pyproject.toml").write_text("[tool.domainjobs]\nmetrics_port = 9500\n")
    where = ["--roots", f"{app.name}.domain", "--app-dir", str(app.parent)]
    for command in ("check", "run"):
        hide = (  # as if the 'metrics' extra were not installed
            "import sys; sys.modules['prometheus_client'] = None; "
            f"from domainjobs.cli import main; sys.exit(main({[command, *where]!r}))"
        )
        result = subprocess.run(
            [sys.executable, "-c", hide],
            env={**os.environ, "DOMAINJOBS_URL": "redis://127.0.0.1:1/0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "metrics_port in [tool.domainjobs]) needs the 'metrics' extra" in result.stderr
        assert "pip install 'domainjobs[metrics]'" in result.stderr
        assert "Traceback" not in result.stderr
