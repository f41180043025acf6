"""Trend counters for the dashboard: per task, per minute, written by the workers.

Each worker keeps a small in-memory table of what its jobs did since the last flush
(done, failed, retried, aborted, run time and queue wait sums, a coarse run-time
histogram) and adds it to the broker about once a second in one round trip
(``domainjobs.runtime.trendstore``). Counting a job is a few integer additions in
:meth:`TrendRecorder.after_process`, a SAQ per-job hook (``saq.Worker(after_process=...)``);
no job waits for the broker because of it.

The broker keeps two resolutions, each with a TTL so the footprint is bounded: one-minute
buckets for the last hours (charts of the last hour) and fifteen-minute buckets for the
last day. A bucket holds, per task, one row of :data:`WIDTH` integers laid out as
:data:`FIELDS` followed by the :data:`RUN_BOUNDS_MS` histogram.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saq.job import Job, Status
from saq.queue import Queue

from domainjobs.runtime.trendstore import KEEP_SECONDS, TrendStore, store_for

logger = logging.getLogger("domainjobs")

#: the counters of a row, before the histogram
FIELDS = ("done", "failed", "retried", "aborted", "run_ms", "wait_ms")
DONE, FAILED, RETRIED, ABORTED, RUN_MS, WAIT_MS = range(len(FIELDS))
#: upper bounds (ms, inclusive) of the run-time histogram; one more bucket above the last
RUN_BOUNDS_MS = (1, 3, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
HIST = len(FIELDS)
WIDTH = HIST + len(RUN_BOUNDS_MS) + 1


@dataclass(frozen=True)
class Resolution:
    """A bucket size and how long the broker keeps such buckets."""

    name: str
    seconds: int
    keep: int

    def start(self, epoch: float) -> int:
        """The start (epoch seconds) of the bucket holding ``epoch``."""
        return int(epoch) // self.seconds * self.seconds


MINUTE = Resolution("m", 60, KEEP_SECONDS["m"])
QUARTER = Resolution("q", 900, KEEP_SECONDS["q"])
RESOLUTIONS = (MINUTE, QUARTER)

#: seconds between two flushes of a worker's counters
FLUSH_EVERY = 1.0


def new_row() -> list[int]:
    """A row of zeros."""
    return [0] * WIDTH


def add_rows(into: list[int], other: Sequence[int]) -> None:
    """Add ``other`` to ``into`` element-wise (``other`` may be shorter)."""
    for index, value in enumerate(other[: len(into)]):
        into[index] += value


def padded(row: Sequence[int]) -> list[int]:
    """A stored row (trailing zeros left out, or from a later, wider layout) at :data:`WIDTH`."""
    out = list(row[:WIDTH])
    out += [0] * (WIDTH - len(out))
    return out


def histogram_index(milliseconds: int) -> int:
    """The histogram bucket of a run time."""
    return bisect.bisect_left(RUN_BOUNDS_MS, milliseconds)


def percentile(row: Sequence[int], fraction: float) -> float | None:
    """The run time (ms) below which ``fraction`` of the row's finished jobs ran, estimated
    from the histogram (linear inside a bucket); None without finished jobs."""
    counts = row[HIST : HIST + len(RUN_BOUNDS_MS) + 1]
    total = sum(counts)
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= wanted:
            low = 0 if index == 0 else RUN_BOUNDS_MS[index - 1]
            if index == len(RUN_BOUNDS_MS):
                return float(low)
            high = RUN_BOUNDS_MS[index]
            return low + (high - low) * (wanted - seen) / count
        seen += count
    return float(RUN_BOUNDS_MS[-1])


def finished(row: Sequence[int]) -> int:
    """Jobs of the row that ended (done, failed or aborted): the run and wait sums' count."""
    return row[DONE] + row[FAILED] + row[ABORTED]


def count_job(row: list[int], job: Job) -> bool:
    """Add one processed job to ``row`` in place; False (nothing added) for a job that is
    still running. Kept lean: it runs once per job in every worker."""
    status = job.status
    if status is Status.COMPLETE:
        row[DONE] += 1
    elif status is Status.FAILED:
        row[FAILED] += 1
    elif status is Status.ABORTED:
        row[ABORTED] += 1
    elif status is Status.QUEUED:
        row[RETRIED] += 1  # SAQ's retry puts the job back as queued (and clears its times)
        return True
    else:
        return False
    started = job.started
    if started:
        if job.completed:
            run = job.completed - started
            if run < 0:
                run = 0
            row[RUN_MS] += run
            row[HIST + bisect.bisect_left(RUN_BOUNDS_MS, run)] += 1
        ready = job.queued
        scheduled = int(job.scheduled) * 1000
        if scheduled > ready:
            ready = scheduled
        if ready and started > ready:
            row[WAIT_MS] += started - ready
    return True


def job_row(job: Job) -> list[int] | None:
    """What one processed job adds to its task's row, or None for a job still running."""
    row = new_row()
    return row if count_job(row, job) else None


#: the key prefix of the jobs of cron ticks (``domainjobs.runtime.cron.tick_key``)
CRON_KEY_PREFIX = "cron:"


def cron_run(job: Job) -> dict[str, Any]:
    """What the schedules page shows of a cron job's last run."""
    return {
        "key": job.key,
        "tick": int(job.scheduled),
        "status": job.status.value,
        "started": job.started / 1000 if job.started else None,
        "completed": job.completed / 1000 if job.completed else None,
    }


class TrendRecorder:
    """The trend counters of one worker's queue: a SAQ ``after_process`` hook that counts,
    and a background flush to the broker (started on the first job, stopped by
    :meth:`close`)."""

    def __init__(self, queue: Queue, store: TrendStore, flush_every: float = FLUSH_EVERY):
        self.queue = queue
        self.store = store
        self.flush_every = flush_every
        self._pending: dict[tuple[int, str], list[int]] = {}
        self._cron_runs: dict[str, dict[str, Any]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def after_process(self, ctx: Mapping[str, Any]) -> None:
        """SAQ per-job hook: count ``ctx["job"]`` in the current minute."""
        job = ctx.get("job")
        if job is None:
            return
        key = (int(time.time()) // 60 * 60, job.function)
        row = self._pending.get(key)
        if row is None:
            row = new_row()
            if not count_job(row, job):
                return  # not processed by a worker (still running, or never queued)
            self._pending[key] = row
        elif not count_job(row, job):
            return
        if job.key.startswith(CRON_KEY_PREFIX) and job.status is not Status.QUEUED:
            self._cron_runs[job.function] = cron_run(job)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever())

    def take(self) -> dict[str, dict[int, dict[str, list[int]]]]:
        """The pending counters, by resolution, bucket start and task; then forget them."""
        pending, self._pending = self._pending, {}
        out: dict[str, dict[int, dict[str, list[int]]]] = {}
        for (minute, task), row in pending.items():
            for resolution in RESOLUTIONS:
                bucket = out.setdefault(resolution.name, {}).setdefault(
                    resolution.start(minute), {}
                )
                if task in bucket:
                    add_rows(bucket[task], row)
                else:
                    bucket[task] = list(row)
        return out

    async def flush(self) -> None:
        """Add the pending counters to the broker (one round trip)."""
        if not self._pending:
            return
        taken = self.take()
        cron_runs, self._cron_runs = self._cron_runs, {}
        try:
            await self.store.add(self.queue.name, taken, cron_runs)
        except Exception:  # the broker is away: lose a second of trend data, not a job
            logger.debug("trend counters not written", exc_info=True)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def close(self, ctx: Any = None) -> None:
        """Stop flushing, after one last flush (a SAQ shutdown hook)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()


def recorder_for(queue: Queue) -> TrendRecorder | None:
    """A recorder for ``queue``, or None when its broker keeps no trend data."""
    store = store_for(queue)
    return TrendRecorder(queue, store) if store is not None else None


def sum_rows(rows: Iterable[Sequence[int]]) -> list[int]:
    """The element-wise sum of ``rows``."""
    total = new_row()
    for row in rows:
        add_rows(total, row)
    return total
