"""Prometheus metrics of job runs (extra ``metrics``: prometheus-client).

Recorded by each worker process, per run, by SAQ ``before_process``/``after_process``
functions (labels ``task``, ``domain``, ``queue``; ``status`` on the counter):

=====================================  =========  ============================================
``domainjobs_jobs_finished_total``     counter    jobs that ended: ``status`` is ``complete``,
                                                  ``failed`` or ``aborted``
``domainjobs_job_retries_total``       counter    runs that ended re-queued for another attempt
                                                  (an error with retries left, or a shutdown)
``domainjobs_job_run_seconds``         histogram  how long each run took (every attempt)
``domainjobs_job_wait_seconds``        histogram  enqueue (or scheduled time) to start, of a
                                                  job's first attempt
``domainjobs_cron_lag_seconds``        histogram  a cron tick's time to the start of its run
=====================================  =========  ============================================

The per-queue gauges (queued, active, scheduled, failed, live workers) are read from the
broker when ``/metrics`` is scraped: see ``domainjobs.observability.exposition``.

Under ``run --processes N`` every child writes to the folder of prometheus-client's
multi-process mode (``PROMETHEUS_MULTIPROC_DIR``), and the supervisor, which serves
``/metrics``, adds them up: counters keep counting across recycled children.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from saq.job import Job

from domainjobs.observability.hooks import JobHook, status_label

NAMESPACE = "domainjobs"

#: Seconds; a job is typically a few milliseconds to a few minutes.
RUN_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Seconds in the queue; alert thresholds usually sit between a second and a few minutes.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
#: Seconds from a cron tick to its run (the scheduler enqueues ahead; a second is normal).
CRON_LAG_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

LABELS = ("task", "domain", "queue")

#: SAQ context keys: when the run started, by the monotonic clock.
_T0 = "domainjobs_metrics_t0"


class JobMetrics:
    """The job metrics of one process, registered in ``registry`` (default: the global)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.finished = Counter(
            "jobs_finished",
            "Jobs that ended, by status (complete, failed, aborted)",
            [*LABELS, "status"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.retries = Counter(
            "job_retries",
            "Runs that ended re-queued for another attempt",
            LABELS,
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "job_run_seconds",
            "Run time of each attempt",
            LABELS,
            namespace=NAMESPACE,
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self.wait_seconds = Histogram(
            "job_wait_seconds",
            "Time from enqueue (or the scheduled time) to the start of the first attempt",
            LABELS,
            namespace=NAMESPACE,
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.cron_lag_seconds = Histogram(
            "cron_lag_seconds",
            "Time from a cron tick to the start of its run",
            LABELS,
            namespace=NAMESPACE,
            buckets=CRON_LAG_BUCKETS,
            registry=self.registry,
        )
        # labelled children, looked up once per (task, queue[, status]): labels() is
        # most of a sample's cost
        self._children: dict[tuple[str, str], _Children] = {}

    def unregister(self) -> None:
        """Take the metrics out of their registry."""
        for metric in (
            self.finished,
            self.retries,
            self.run_seconds,
            self.wait_seconds,
            self.cron_lag_seconds,
        ):
            self.registry.unregister(metric)

    def children(self, task: str, domain: str, queue: str) -> _Children:
        """The labelled series of one task on one queue."""
        key = (task, queue)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = _Children(self, (task, domain, queue))
        return found

    def job_hooks(self, domains: dict[str, str]) -> tuple[JobHook, JobHook]:
        """SAQ ``before_process``/``after_process`` functions that record each run
        (``domains``: task name -> domain)."""

        async def started(ctx: Any) -> None:
            ctx[_T0] = time.perf_counter()
            job: Job = ctx["job"]
            if job.attempts != 1:
                return
            since = max(job.queued, job.scheduled * 1000)
            if since and job.started:
                queue = job.queue.name if job.queue is not None else ""
                series = self.children(job.function, domains.get(job.function, ""), queue)
                series.wait.observe(max(job.started - since, 0) / 1000)
                if job.scheduled and job.key.startswith("cron:"):
                    series.cron_lag.observe(max(job.started - job.scheduled * 1000, 0) / 1000)

        async def ended(ctx: Any) -> None:
            t0 = ctx.pop(_T0, None)
            job: Job = ctx["job"]
            queue = job.queue.name if job.queue is not None else ""
            series = self.children(job.function, domains.get(job.function, ""), queue)
            if t0 is not None:
                series.run.observe(time.perf_counter() - t0)
            status = status_label(job)
            if status == "retried":
                series.retries.inc()
            else:
                series.finished(status).inc()

        return started, ended


class _Children:
    """The labelled series of one (task, domain, queue), each made on first use (a series
    exists in the output from its creation: a task never retried shows no retries line)."""

    __slots__ = ("_cron_lag", "_finished", "_labels", "_metrics", "_retries", "run", "wait")

    def __init__(self, metrics: JobMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self.run = metrics.run_seconds.labels(*labels)
        self.wait = metrics.wait_seconds.labels(*labels)
        self._cron_lag: Any = None
        self._retries: Any = None
        self._finished: dict[str, Any] = {}

    @property
    def cron_lag(self) -> Any:
        """The cron lag histogram."""
        if self._cron_lag is None:
            self._cron_lag = self._metrics.cron_lag_seconds.labels(*self._labels)
        return self._cron_lag

    @property
    def retries(self) -> Any:
        """The retries counter."""
        if self._retries is None:
            self._retries = self._metrics.retries.labels(*self._labels)
        return self._retries

    def finished(self, status: str) -> Any:
        """The finished counter of ``status``."""
        child = self._finished.get(status)
        if child is None:
            child = self._finished[status] = self._metrics.finished.labels(*self._labels, status)
        return child
