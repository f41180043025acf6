"""What the dashboard pages show, read from the registry and the broker: per-task figures
over a window (from the trend buckets), queue counts and live workers, chart series, cron
schedules, and job searches. Nothing here renders HTML."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from croniter import croniter
from saq.job import Job, Status
from saq.queue import Queue

from domainjobs.registry import CronSpec, Registry
from domainjobs.runtime.cron import tick_key
from domainjobs.runtime.pauses import paused_crons
from domainjobs.runtime.trends import (
    ABORTED,
    DONE,
    FAILED,
    MINUTE,
    QUARTER,
    RETRIED,
    RUN_MS,
    WAIT_MS,
    Resolution,
    add_rows,
    finished,
    new_row,
    padded,
    percentile,
)
from domainjobs.web.queues import QueueSet

#: the windows a page can show: label -> seconds
WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400}
DEFAULT_WINDOW = "1h"
#: how many waiting jobs per queue are looked at to count them per task
WAITING_SAMPLE = 200


def window_seconds(label: str | None) -> tuple[str, int]:
    """The known window named ``label`` (or the default) and its length."""
    if label not in WINDOWS:
        label = DEFAULT_WINDOW
    assert label is not None
    return label, WINDOWS[label]


def resolution_for(seconds: int) -> Resolution:
    """Minute buckets up to two hours, quarter-hour buckets beyond."""
    return MINUTE if seconds <= 2 * 3600 else QUARTER


def bucket_starts(resolution: Resolution, seconds: int, now: float) -> list[int]:
    """The starts of the buckets covering the last ``seconds`` up to ``now``, oldest first."""
    last = resolution.start(now)
    count = max(1, math.ceil(seconds / resolution.seconds))
    return [last - i * resolution.seconds for i in range(count - 1, -1, -1)]


async def read_buckets(
    queue_set: QueueSet, seconds: int, now: float
) -> tuple[list[int], dict[str, dict[int, dict[str, list[int]]]]]:
    """Bucket starts of the window, and each queue's stored rows in them."""
    resolution = resolution_for(seconds)
    starts = bucket_starts(resolution, seconds, now)
    names = [name for name, store in queue_set.stores.items() if store is not None]

    async def one(name: str) -> dict[int, dict[str, list[int]]]:
        store = queue_set.stores[name]
        assert store is not None
        found = await store.read(name, resolution.name, starts)
        return {
            start: {task: padded(row) for task, row in rows.items()}
            for start, rows in found.items()
        }

    results = await asyncio.gather(*(one(name) for name in names))
    return starts, dict(zip(names, results, strict=True))


# -- the overview ----------------------------------------------------------------------------


@dataclass
class Figures:
    """Summed trend counters with the derived figures a table shows."""

    row: list[int] = field(default_factory=new_row)

    @property
    def done(self) -> int:
        """Jobs completed."""
        return self.row[DONE]

    @property
    def failed(self) -> int:
        """Jobs failed for good."""
        return self.row[FAILED]

    @property
    def retried(self) -> int:
        """Attempts that failed and were retried."""
        return self.row[RETRIED]

    @property
    def aborted(self) -> int:
        """Jobs aborted."""
        return self.row[ABORTED]

    @property
    def p50(self) -> float | None:
        """Median run time (ms), from the histogram."""
        return percentile(self.row, 0.5)

    @property
    def p95(self) -> float | None:
        """95th percentile run time (ms), from the histogram."""
        return percentile(self.row, 0.95)

    @property
    def wait(self) -> float | None:
        """Mean queue wait (ms) of the jobs that ended."""
        count = finished(self.row)
        return self.row[WAIT_MS] / count if count else None

    @property
    def run(self) -> float | None:
        """Mean run time (ms)."""
        count = finished(self.row)
        return self.row[RUN_MS] / count if count else None

    @property
    def health(self) -> str:
        """``ok``, ``warn`` (some failures) or ``bad`` (a fifth or more failed), or ``idle``."""
        total = self.done + self.failed + self.aborted
        if not total and not self.retried:
            return "idle"
        if self.failed * 5 >= max(total, 1) and self.failed:
            return "bad"
        return "warn" if self.failed or self.retried or self.aborted else "ok"


@dataclass
class TaskView:
    """A task's line of the overview."""

    name: str
    domain: str
    queue: str
    figures: Figures
    waiting: int | None
    cron: str | None


@dataclass
class DomainView:
    """A domain's block of the overview."""

    name: str
    queues: list[str]
    tasks: list[TaskView]
    figures: Figures


@dataclass
class WorkerView:
    """A live worker and what it runs now."""

    id: str
    queue: str
    uptime_ms: int
    stats: Mapping[str, Any]
    running: list[dict[str, Any]]


@dataclass
class QueueView:
    """A queue's counters and window figures."""

    name: str
    queued: int
    active: int
    scheduled: int
    workers: int
    figures: Figures
    trends: bool


@dataclass
class Overview:
    """Everything the overview page shows."""

    window: str
    domains: list[DomainView]
    queues: list[QueueView]
    workers: list[WorkerView]
    totals: Figures
    generated_ms: float = 0.0


async def overview(registry: Registry, queue_set: QueueSet, window: str) -> Overview:
    """The overview over the last ``window`` (a key of :data:`WINDOWS`)."""
    started = time.perf_counter()
    label, seconds = window_seconds(window)
    await queue_set.connect()
    names = list(queue_set.queues)
    now = time.time()
    infos, (_, buckets) = await asyncio.gather(
        asyncio.gather(*(queue_set.queues[n].info(jobs=True, limit=WAITING_SAMPLE) for n in names)),
        read_buckets(queue_set, seconds, now),
    )
    per_task: dict[tuple[str, str], list[int]] = {}
    for queue_name, by_start in buckets.items():
        for rows in by_start.values():
            for task, row in rows.items():
                total = per_task.get((queue_name, task))
                if total is None:
                    per_task[(queue_name, task)] = list(row)
                else:
                    add_rows(total, row)

    waiting: dict[tuple[str, str], int] = {}
    complete_sample: dict[str, bool] = {}
    workers: list[WorkerView] = []
    queues: list[QueueView] = []
    for name, info in zip(names, infos, strict=True):
        jobs = info.get("jobs") or []
        running: dict[str, list[dict[str, Any]]] = {}
        queued_seen = 0
        for job in jobs:
            status = job.get("status")
            if status == Status.QUEUED.value and (job.get("scheduled") or 0) <= now:
                queued_seen += 1
                key = (name, str(job.get("function")))
                waiting[key] = waiting.get(key, 0) + 1
            elif status == Status.ACTIVE.value and job.get("worker_id"):
                running.setdefault(str(job["worker_id"]), []).append(job)
        complete_sample[name] = queued_seen >= int(info.get("queued") or 0)
        for worker_id, worker in sorted((info.get("workers") or {}).items()):
            stats = dict(worker.get("stats") or {})
            workers.append(
                WorkerView(
                    id=worker_id,
                    queue=name,
                    uptime_ms=int(stats.get("uptime") or 0),
                    stats=stats,
                    running=running.get(worker_id, []),
                )
            )
        figures = Figures()
        for (queue_name, _), row in per_task.items():
            if queue_name == name:
                add_rows(figures.row, row)
        queues.append(
            QueueView(
                name=name,
                queued=int(info.get("queued") or 0),
                active=int(info.get("active") or 0),
                scheduled=int(info.get("scheduled") or 0),
                workers=len(info.get("workers") or {}),
                figures=figures,
                trends=queue_set.stores.get(name) is not None,
            )
        )

    crons = {spec.name: spec.cron for spec in registry.crons}
    domains: dict[str, DomainView] = {}
    totals = Figures()
    for spec in registry.tasks.values():
        row = per_task.get((spec.queue, spec.name)) or new_row()
        count = waiting.get((spec.queue, spec.name), 0)
        task = TaskView(
            name=spec.name,
            domain=spec.domain,
            queue=spec.queue,
            figures=Figures(list(row)),
            waiting=count if complete_sample.get(spec.queue, True) or count else None,
            cron=crons.get(spec.name),
        )
        domain = domains.get(spec.domain)
        if domain is None:
            domain = domains[spec.domain] = DomainView(spec.domain, [], [], Figures())
        domain.tasks.append(task)
        if spec.queue not in domain.queues:
            domain.queues.append(spec.queue)
        add_rows(domain.figures.row, row)
        add_rows(totals.row, row)
    result = Overview(
        window=label,
        domains=sorted(domains.values(), key=lambda d: d.name),
        queues=queues,
        workers=workers,
        totals=totals,
    )
    result.generated_ms = (time.perf_counter() - started) * 1000
    return result


# -- chart series ----------------------------------------------------------------------------


async def trend_series(
    registry: Registry, queue_set: QueueSet, window: str, by: str
) -> dict[str, Any]:
    """Chart data: bucket times and, per queue (``by="queue"``) or domain, per-minute done,
    failed and retried counts and mean queue wait (ms; null where nothing ended)."""
    label, seconds = window_seconds(window)
    resolution = resolution_for(seconds)
    await queue_set.connect()
    now = time.time()
    starts, buckets = await read_buckets(queue_set, seconds, now)
    domain_of = {spec.name: spec.domain for spec in registry.tasks.values()}
    groups: dict[str, list[list[int]]] = {}
    if by == "queue":
        for name in queue_set.queues:
            groups[name] = [new_row() for _ in starts]
    else:
        for domain in sorted({spec.domain for spec in registry.tasks.values()}):
            groups[domain] = [new_row() for _ in starts]
    index = {start: i for i, start in enumerate(starts)}
    for queue_name, by_start in buckets.items():
        for start, rows in by_start.items():
            i = index.get(start)
            if i is None:
                continue
            for task, row in rows.items():
                group = queue_name if by == "queue" else domain_of.get(task, "(other)")
                series = groups.get(group)
                if series is None:
                    series = groups[group] = [new_row() for _ in starts]
                add_rows(series[i], row)
    # counts per minute; the current bucket is only partly over: its rate so far
    minutes = [resolution.seconds / 60] * len(starts)
    minutes[-1] = max(min(now - starts[-1], resolution.seconds), min(15, resolution.seconds)) / 60
    out = []
    for name, series_rows in groups.items():
        out.append(
            {
                "name": name,
                "done": [r[DONE] / m for r, m in zip(series_rows, minutes, strict=True)],
                "failed": [r[FAILED] / m for r, m in zip(series_rows, minutes, strict=True)],
                "retried": [r[RETRIED] / m for r, m in zip(series_rows, minutes, strict=True)],
                "wait": [(r[WAIT_MS] / finished(r)) if finished(r) else None for r in series_rows],
            }
        )
    return {
        "window": label,
        "by": "queue" if by == "queue" else "domain",
        "step": resolution.seconds,
        "x": starts,
        "series": out,
        "trends": any(store is not None for store in queue_set.stores.values()),
    }


# -- schedules -------------------------------------------------------------------------------


@dataclass
class LastRun:
    """How a cron job's last tick went (or is going)."""

    tick: float
    status: str
    started: float | None
    completed: float | None
    key: str
    #: seconds from the tick to the job's start (to now, for a tick still waiting)
    late: float | None


def _last_run(tick: float, status: str, started: float | None, completed: float | None,
              key: str, now: float) -> LastRun:  # fmt: skip
    if started:
        late: float | None = max(0.0, started - tick)
    elif status in (Status.QUEUED.value, Status.NEW.value):
        late = max(0.0, now - tick)
    else:
        late = None
    return LastRun(tick, status, started, completed, key, late)


@dataclass
class CronView:
    """A cron job's line of the schedules page."""

    name: str
    domain: str
    queue: str
    cron: str
    timezone: str
    next_runs: list[datetime]
    paused: bool
    last: LastRun | None


async def schedules(
    registry: Registry, queue_set: QueueSet, tz: tzinfo, runs: int = 3
) -> list[CronView]:
    """Every cron job with its next ``runs`` ticks, pause state and last run."""
    await queue_set.connect()
    now = datetime.now(tz)
    names = [n for n in queue_set.queues if any(c.queue == n for c in registry.crons)]

    async def per_queue(name: str) -> tuple[frozenset[str], dict[str, dict[str, Any]]]:
        queue = queue_set.queues[name]
        store = queue_set.stores.get(name)
        recorded = await store.cron_runs(name) if store is not None else {}
        return await paused_crons(queue), recorded

    found = dict(zip(names, await asyncio.gather(*(per_queue(n) for n in names)), strict=True))
    views = []
    for spec in registry.crons:
        paused, recorded = found.get(spec.queue, (frozenset(), {}))
        ticks = croniter(spec.cron, now)
        next_runs = [ticks.get_next(datetime) for _ in range(runs)]
        last = await last_run(spec, queue_set.queues.get(spec.queue), recorded, now)
        views.append(
            CronView(
                name=spec.name,
                domain=spec.task.domain,
                queue=spec.queue,
                cron=spec.cron,
                timezone=str(tz),
                next_runs=next_runs,
                paused=spec.name in paused,
                last=last,
            )
        )
    return views


async def last_run(
    spec: CronSpec, queue: Queue | None, recorded: Mapping[str, Any], now: datetime
) -> LastRun | None:
    """The newest started run of the cron job: as the workers recorded its end, or as the
    broker still has its job; else the newest tick still waiting to start."""
    epoch = now.timestamp()
    started: list[LastRun] = []
    record = recorded.get(spec.name)
    if record:
        started.append(
            _last_run(
                float(record["tick"]),
                str(record["status"]),
                record.get("started"),
                record.get("completed"),
                str(record.get("key") or ""),
                epoch,
            )
        )
    waiting = None
    if queue is not None:
        ticks = croniter(spec.cron, now)
        keys = [tick_key(spec.name, int(ticks.get_prev())) for _ in range(3)]
        for job in await queue.jobs(keys):  # newest tick first
            if job is None:
                continue
            run = _last_run(
                float(job.scheduled),
                job.status.value,
                job.started / 1000 if job.started else None,
                job.completed / 1000 if job.completed else None,
                job.key,
                epoch,
            )
            if job.started:
                started.append(run)
                break
            waiting = waiting or run
    if started:
        return max(started, key=lambda run: run.tick)
    return waiting


# -- jobs ------------------------------------------------------------------------------------

#: how many jobs a search lists at most
LIST_LIMIT = 100
STATUSES = ("failed", "queued", "active", "complete", "aborted", "all")


def split_job_id(text: str) -> tuple[str | None, str]:
    """``(queue, key)`` of a SAQ job id ``saq:job:<queue>:<key>``, or ``(None, text)``."""
    if text.startswith("saq:job:"):
        queue, _, key = text[len("saq:job:") :].partition(":")
        if key:
            return queue, key
    return None, text


async def find_job(queue_set: QueueSet, text: str) -> tuple[str, Job] | None:
    """The job whose key or id is ``text``, looked up in every queue."""
    await queue_set.connect()
    queue_name, key = split_job_id(text.strip())
    names = [queue_name] if queue_name in queue_set.queues else list(queue_set.queues)
    for name in names:
        job = await queue_set.queues[name].job(key)
        if job is not None:
            return name, job
    return None


def job_time(job: Job) -> int:
    """The most recent time (ms) of the job: its end, start or enqueue."""
    return int(job.completed or job.started or job.queued or 0)


@dataclass
class JobList:
    """A page of jobs and how many matched."""

    jobs: list[tuple[str, Job]]
    matched: int
    by_task: dict[str, int]


async def list_jobs(
    queue_set: QueueSet,
    *,
    status: str = "failed",
    task: str | None = None,
    queue: str | None = None,
    limit: int = LIST_LIMIT,
) -> JobList:
    """The most recent jobs of a status (and task, queue), newest first, and the count of
    matches per task."""
    await queue_set.connect()
    wanted = list(Status) if status == "all" else [Status(status)]
    names = [queue] if queue in queue_set.queues else list(queue_set.queues)
    found: list[tuple[str, Job]] = []
    by_task: dict[str, int] = {}
    for name in names:
        async for job in queue_set.queues[name].iter_jobs(statuses=wanted):
            by_task[job.function] = by_task.get(job.function, 0) + 1
            if task is None or job.function == task:
                found.append((name, job))
    found.sort(key=lambda pair: job_time(pair[1]), reverse=True)
    return JobList(found[:limit], len(found), dict(sorted(by_task.items())))


def jobs_of_task(found: Sequence[tuple[str, Job]], task: str) -> list[tuple[str, Job]]:
    """The entries of ``found`` whose function is ``task``."""
    return [(name, job) for name, job in found if job.function == task]
