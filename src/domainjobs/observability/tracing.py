"""OpenTelemetry spans for enqueues and job runs (extra ``otel``: opentelemetry-api).

Following OpenTelemetry's messaging semantic conventions:

- ``publish <queue>`` (kind PRODUCER) around each enqueue by ``Jobs``. The span's context
  travels in the job, as a W3C ``traceparent`` (plus ``tracestate`` and baggage, whatever
  the configured propagators write) in ``job.meta["_otel_context"]``: the place
  litestar-saq reads and writes it, so jobs enqueued by either are linked by both.
- ``process <queue>`` (kind CONSUMER) around each run of a job, a child of the producer's
  context. A job without one (a cron tick, a job enqueued by plain SAQ) starts its own
  trace. The span is current while the task runs, so what the task traces (HTTP calls,
  queries, jobs it enqueues) nests under it. An exception is recorded on the span and sets
  its status to ERROR; so does an abort.

Attributes: ``messaging.system`` (``saq``), ``messaging.destination.name`` (the queue),
``messaging.operation.name``/``.type``, ``messaging.message.id`` (the job key),
``domainjobs.task``, ``domainjobs.domain``, ``domainjobs.attempt`` and, on a run's span,
``domainjobs.job.status`` (complete, failed, aborted, retried).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from domainjobs import __version__
from domainjobs.observability.hooks import JobHook, status_label

if TYPE_CHECKING:
    from saq.job import Job
    from saq.queue import Queue

    from domainjobs.registry import TaskSpec

#: Where the producer's context travels in ``job.meta`` (litestar-saq's key).
CARRIER_KEY = "_otel_context"
SYSTEM = "saq"
TRACER_NAME = "domainjobs"

#: The key under which a running job's span and context token wait in SAQ's context.
_SPAN_KEY = "domainjobs_span"

_ROOT = otel_context.Context()


def carrier_of(job: Job) -> dict[str, str] | None:
    """The propagation headers a producer put into ``job``, if any."""
    meta = job.meta
    if not meta:
        return None
    carrier = meta.get(CARRIER_KEY)
    return carrier if isinstance(carrier, dict) and carrier else None


class Tracing:
    """The producer and consumer spans (see the module docstring)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider)
        self.enabled = True

    async def publish(self, queue: Queue, job: Job, spec: TaskSpec) -> Job | None:
        """Enqueue ``job`` inside a ``publish <queue>`` span whose context the job carries."""
        if not self.enabled:
            return await queue.enqueue(job)
        with self.tracer.start_as_current_span(
            f"publish {queue.name}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.name": "publish",
                "messaging.operation.type": "send",
                "messaging.destination.name": queue.name,
                "messaging.message.id": job.key,
                "domainjobs.task": spec.name,
                "domainjobs.domain": spec.domain,
            },
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:  # empty when no SDK records spans: leave the job as it was
                job.meta = {**(job.meta or {}), CARRIER_KEY: carrier}
            enqueued = await queue.enqueue(job)
            if enqueued is None:  # a job of that key exists: nothing new was published
                span.set_attribute("domainjobs.job.created", False)
            return enqueued

    def job_hooks(self, domains: dict[str, str]) -> tuple[JobHook, JobHook]:
        """SAQ ``before_process``/``after_process`` functions that open and close the
        ``process <queue>`` span of each run (``domains``: task name -> domain)."""
        tracer = self.tracer

        async def start_span(ctx: Any) -> None:
            if not self.enabled:
                return
            job: Job = ctx["job"]
            carrier = carrier_of(job)
            parent = propagate.extract(carrier) if carrier else _ROOT
            queue = job.queue.name if job.queue is not None else ""
            span = tracer.start_span(
                f"process {queue}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": SYSTEM,
                    "messaging.operation.name": "process",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": queue,
                    "messaging.message.id": job.key,
                    "domainjobs.task": job.function,
                    "domainjobs.domain": domains.get(job.function, ""),
                    "domainjobs.attempt": job.attempts,
                },
            )
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            ctx[_SPAN_KEY] = (span, token)

        async def end_span(ctx: Any) -> None:
            entry = ctx.pop(_SPAN_KEY, None)
            if entry is None:
                return
            span, token = entry
            job: Job = ctx["job"]
            label = status_label(job)
            span.set_attribute("domainjobs.job.status", label)
            error = ctx.get("exception")
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            elif label == "aborted":
                span.set_status(Status(StatusCode.ERROR, f"aborted: {job.error or 'aborted'}"))
            elif label == "retried":  # cancelled by a shutdown and re-queued
                span.set_status(Status(StatusCode.ERROR, job.error or "re-queued"))
            span.end()
            otel_context.detach(token)

        return start_span, end_span
