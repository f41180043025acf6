"""The ``/metrics`` page: job metrics plus per-queue gauges read from the broker at scrape
time, in Prometheus' text format.

Gauges (labels: ``queue``, and ``status`` on the first):

=====================================  ===================================================
``domainjobs_queue_jobs``              jobs of the queue by ``status``: ``queued``,
                                       ``active``, ``scheduled``, ``failed`` (failed jobs
                                       still stored, within their ttl)
``domainjobs_queue_workers``           live workers serving the queue (every host)
``domainjobs_queue_up``                1 when the broker answered for the queue, else 0
=====================================  ===================================================

The counts are those of ``domainjobs status`` (``domainjobs.client.status``).
Counting failed jobs scans the queue's stored jobs: a count that took ``t`` to make is reused
for the next ``100 t`` (at most ``FAILED_REFRESH`` seconds), so a queue with few stored jobs
is counted at every scrape and a large one costs at most 1 % of the time. The other counts
are read at every scrape.

The job metrics come from prometheus-client's global registry (or the one given), or, when
``PROMETHEUS_MULTIPROC_DIR`` is set, from every process that wrote to that folder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from saq.queue import Queue

from domainjobs.client.status import QueueStatus, WorkerStatus, count_failed
from domainjobs.observability.encoding import MultiProcessSamples, TextEncoder
from domainjobs.observability.state import multiprocess_dir

logger = logging.getLogger("domainjobs.observability")

#: Longest a count of a queue's failed jobs (a scan of its stored jobs) is reused, seconds.
FAILED_REFRESH = 30.0
#: Seconds a scrape waits for the broker before reporting the queue down.
BROKER_TIMEOUT = 5.0

STATUSES = ("queued", "active", "scheduled", "failed")


class QueueGauges:
    """Reads the per-queue gauges of ``queues`` (connected) for one scrape after another."""

    def __init__(self, queues: Iterable[Queue], failed_refresh: float = FAILED_REFRESH) -> None:
        self.queues = list(queues)
        self.failed_refresh = failed_refresh
        self._failed: dict[str, tuple[float, int]] = {}

    async def _failed_count(self, queue: Queue) -> int:
        cached = self._failed.get(queue.name)
        now = time.monotonic()
        if cached is not None and now < cached[0]:
            return cached[1]
        count = await count_failed(queue)
        took = time.monotonic() - now
        # a scan that took t is reused for 100 t (at most 1% of the time scanning), and
        # at most failed_refresh seconds: a small queue is counted at every scrape
        self._failed[queue.name] = (now + min(100 * took, self.failed_refresh), count)
        return count

    async def _read(self, queue: Queue) -> QueueStatus | None:
        try:
            status = await asyncio.wait_for(_counts(queue), BROKER_TIMEOUT)
            failed = await asyncio.wait_for(self._failed_count(queue), BROKER_TIMEOUT)
        except Exception as exc:
            logger.warning("metrics: cannot read queue %r from the broker: %s", queue.name, exc)
            return None
        return QueueStatus(
            status.name,
            status.queued,
            status.active,
            status.scheduled,
            failed,
            status.workers,
        )

    async def read(self) -> list[tuple[str, QueueStatus | None]]:
        """Each queue's counts, or None for a queue the broker did not answer for."""
        found = await asyncio.gather(*(self._read(queue) for queue in self.queues))
        return [(queue.name, status) for queue, status in zip(self.queues, found, strict=True)]


async def _counts(queue: Queue) -> QueueStatus:
    """``queue_status`` without the failed count (read separately, less often)."""
    info = await queue.info()
    return QueueStatus(
        name=queue.name,
        queued=int(info.get("queued", 0)),
        active=int(info.get("active", 0)),
        scheduled=max(int(info.get("scheduled", 0)), 0),
        failed=0,
        workers=tuple(WorkerStatus(worker_id) for worker_id in info.get("workers", {})),
    )


def queue_families(snapshot: Sequence[tuple[str, QueueStatus | None]]) -> list[Metric]:
    """The gauge families of one scrape's queue counts."""
    jobs = GaugeMetricFamily(
        "domainjobs_queue_jobs", "Jobs of the queue by status", labels=["queue", "status"]
    )
    workers = GaugeMetricFamily(
        "domainjobs_queue_workers", "Live workers serving the queue", labels=["queue"]
    )
    up = GaugeMetricFamily(
        "domainjobs_queue_up", "1 when the broker answered for the queue", labels=["queue"]
    )
    for name, status in snapshot:
        up.add_metric([name], 0 if status is None else 1)
        if status is None:
            continue
        for what in STATUSES:
            jobs.add_metric([name, what], getattr(status, what))
        workers.add_metric([name], len(status.workers))
    return [jobs, workers, up]


#: Prometheus' text format, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_encoder = TextEncoder()
_folders: dict[str, MultiProcessSamples] = {}


def job_metrics_text(registry: Any = None) -> str:
    """The job metrics: every process's samples in multi-process mode, else those of
    ``registry`` (default: prometheus-client's global one)."""
    folder = multiprocess_dir()
    if folder is not None:
        samples = _folders.get(folder)
        if samples is None:
            samples = _folders[folder] = MultiProcessSamples(folder, _encoder)
        return samples.encode()
    return _encoder.encode((registry if registry is not None else REGISTRY).collect())


async def render(gauges: QueueGauges | None, registry: Any = None) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type."""
    snapshot = await gauges.read() if gauges is not None else []
    text = job_metrics_text(registry) + _encoder.encode(queue_families(snapshot))
    return text.encode("utf-8"), CONTENT_TYPE
