"""FastAPI on the shop domains, traced with OpenTelemetry from the request to the job's run.

One trace per request: FastAPI's server span, ``publish billing`` (PRODUCER) when the route
enqueues, and ``process billing`` (CONSUMER) when a worker runs the job, in whichever
process, carried in the job itself.

    pip install 'domainjobs[otel]' opentelemetry-sdk opentelemetry-instrumentation-fastapi
    cd examples/shop
    export DOMAINJOBS_URL=redis://localhost:6379
    SHOP_IN_PROCESS_WORKERS=1 python -m uvicorn --app-dir .. fastapi_otel_app:app
    curl -X POST localhost:8000/invoices -H 'content-type: application/json' \\
         -d '{"order_id": 7, "amount_cents": 1250}'      # the spans print on the console

With workers in their own processes, trace them with no code change:
``opentelemetry-instrument python -m domainjobs run`` (pip install opentelemetry-distro).
"""

from __future__ import annotations

import os
from typing import Any

from app.domain.billing.jobs.tasks.invoices import create_invoice
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from pydantic import BaseModel

from domainjobs import Jobs
from domainjobs.lifespan import jobs_lifespan
from domainjobs.observability import enable_tracing


class Invoice(BaseModel):
    order_id: int
    amount_cents: int


def console_tracing() -> TracerProvider:
    """An SDK that prints finished spans (use an OTLP exporter in production)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop-web"}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def make_app(
    tracer_provider: TracerProvider | None = None,
    *,
    in_process_workers: bool | None = None,
    url: str | None = None,
) -> FastAPI:
    """The app, its spans sent to ``tracer_provider`` (default: the global provider, or
    the console when nothing configured one)."""
    if tracer_provider is None and isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    ):
        tracer_provider = console_tracing()
    # before the lifespan builds any worker: workers built later get the tracing hooks
    enable_tracing(tracer_provider)
    if in_process_workers is None:
        in_process_workers = os.environ.get("SHOP_IN_PROCESS_WORKERS") == "1"
    jobs = Jobs(url=url)  # the configured roots ([tool.domainjobs]) and broker
    app = FastAPI(lifespan=jobs_lifespan(jobs, run_workers=in_process_workers))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)

    @app.post("/invoices", status_code=202)
    async def new_invoice(invoice: Invoice) -> dict[str, Any]:
        """Enqueue billing.create_invoice inside the request's trace."""
        handle = await jobs.enqueue(
            create_invoice, order_id=invoice.order_id, amount_cents=invoice.amount_cents
        )
        return handle.to_dict()

    @app.post("/tasks/{name}", status_code=202)
    async def enqueue_by_name(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Enqueue any task by public name."""
        return (await jobs.enqueue(name, **kwargs)).to_dict()

    @app.get("/jobs/{key}")
    async def job_status(key: str) -> dict[str, Any]:
        """The job's status, and its result once complete."""
        handle = await jobs.job(key)
        return {"status": "missing"} if handle is None else handle.to_dict()

    return app


app = make_app()
