"""What the sweep does with each job it finds taken by a worker (docs/reliability.md).

The rules are the same for every broker; ``sweep_redis`` and ``sweep_postgres`` only gather
the facts (the job, whether its worker still holds its lease, how long an entry has been
unchanged) and carry out the verdict.

- A job marked ``active`` whose worker's lease has lapsed (the process died, or stopped
  without finishing it) is *lost*: it is put back on its queue at once, whatever its
  ``retries``, because a crash is not the job's failure. A job lost ``MAX_LOST`` times (it
  keeps killing its workers) is given up as ``aborted``.
- A job taken from the queue but not yet marked ``active`` is left alone while a live worker
  may still be about to mark it: only once it has sat unchanged for ``SETTLE`` seconds is it
  put back on its queue. This is the window plain SAQ's sweep aborts jobs in.
- A job still ``active`` under a live lease is handled as SAQ does once it is stuck past its
  ``heartbeat``; its ``timeout`` is the worker's to enforce (it does, as soon as its event
  loop runs: a loop blocked by another job must not get every job of the process aborted).
  Under an unknown worker (a plain SAQ worker, no lease) a job past its ``timeout`` by more
  than ``SETTLE`` seconds is stuck too (the margin keeps the sweep from racing the worker).
"""

from __future__ import annotations

import enum

from saq.job import Job, Status

#: How often (seconds) the queue is swept; domainjobs workers default to this
#: (``WORKER_DEFAULTS["timers"]["sweep"]``), SAQ's default is 60.
SWEEP_PERIOD = 2
#: A worker's lease lasts this long (seconds) unless its process renews it.
LOST_AFTER = 6.0
#: How long (seconds) a taken-but-not-started job may sit unchanged before it is put back.
SETTLE = 6.0
#: A job whose worker died this many times is given up (status ``aborted``).
MAX_LOST = 3
#: ``job.meta`` key counting how often a job's worker died under it.
LOST_COUNT_KEY = "domainjobs_lost"


def recovery_bound(
    sweep_period: float = SWEEP_PERIOD, lost_after: float = LOST_AFTER, settle: float = SETTLE
) -> float:
    """The longest a dead worker's job waits (seconds) before it is back on its queue."""
    return max(lost_after + sweep_period, settle + 2 * sweep_period)


#: With the defaults: a crashed worker's jobs are queued again within this many seconds.
RECOVERY_BOUND = recovery_bound()


class Verdict(enum.Enum):
    """What the sweep does with one job found taken by a worker."""

    KEEP = "keep"  # leave it to its worker
    REQUEUE = "requeue"  # put it back on its queue (its worker is gone)
    GIVE_UP = "give up"  # lost too often: finish it as aborted
    STUCK = "stuck"  # SAQ's handling: abort, wait for the worker, retry or finish
    FINISH_ABORTED = "finish aborted"  # an abort that no worker will complete
    UNLIST = "unlist"  # already finished: only drop it from the taken list


UNSTARTED = (Status.NEW, Status.QUEUED)


def stuck(job: Job, now_ms: int, settle: float, *, lease_live: bool = False) -> bool:
    """SAQ's ``Job.stuck`` with a margin on the timeout, which the worker enforces itself
    (and alone, while its lease is live)."""
    if job.status not in (Status.ACTIVE, Status.ABORTING):
        return False
    if not lease_live and job.timeout and now_ms - job.started > (job.timeout + settle) * 1000:
        return True
    return bool(job.heartbeat and now_ms - job.touched > job.heartbeat * 1000)


def lost_count(job: Job) -> int:
    """How often this job's worker has died under it so far."""
    value = (job.meta or {}).get(LOST_COUNT_KEY, 0)
    return value if isinstance(value, int) else 0


def verdict_for_active(
    job: Job,
    *,
    lease_lapsed: bool,
    now_ms: int,
    settle: float,
    max_lost: int,
    lease_live: bool = False,
) -> Verdict:
    """The verdict for a job whose stored status says a worker is running it."""
    if lease_lapsed:
        return Verdict.GIVE_UP if lost_count(job) + 1 >= max_lost else Verdict.REQUEUE
    return Verdict.STUCK if stuck(job, now_ms, settle, lease_live=lease_live) else Verdict.KEEP


def verdict_for_unmarked(job: Job, *, unchanged_for: float, settle: float) -> Verdict:
    """The verdict for a taken job not marked active (too fresh to judge, or abandoned)."""
    if unchanged_for < settle:
        return Verdict.KEEP
    if job.status in UNSTARTED:
        return Verdict.REQUEUE
    if job.status == Status.ABORTING:
        return Verdict.FINISH_ABORTED
    return Verdict.UNLIST


def mark_lost(job: Job, worker_id: str | None) -> None:
    """Turn ``job`` (lost with its worker) into the queued job to put back."""
    job.meta = {**(job.meta or {}), LOST_COUNT_KEY: lost_count(job) + 1}
    job.status = Status.QUEUED
    job.error = f"worker {worker_id} was lost while running this job; queued again"
    job.started = 0
    job.completed = 0
    job.progress = 0.0


def give_up_error(job: Job) -> str:
    """The error a job gets when it is given up after losing ``MAX_LOST`` workers."""
    return (
        f"given up: its worker died {lost_count(job) + 1} times while running it "
        f"(last: {job.worker_id}); a job that kills its worker is not run again"
    )
