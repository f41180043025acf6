"""Cron jobs that fire once per tick, however many worker processes schedule them.

SAQ's scheduler enqueues each cron job under one key, ``cron:<name>``, so a tick is skipped
whenever the previous tick's job is still incomplete when the next enqueue is attempted.
With a per-second cron (``* * * * * *``) and workers started together, plain SAQ fires every
other second. domainjobs keys each tick's job ``cron:<name>:<epoch seconds of the tick>``:
every process may try to enqueue the same tick, no tick waits for the previous one to
finish, and none is enqueued twice.

With a sweep-safe queue, each tick fires exactly once across hosts: the broker records every
tick offered (in the same script or transaction as the enqueue) and refuses a tick offered
before, even one whose job has already finished; and it refuses a tick more than
``TICK_BOUND`` seconds old by the broker's clock, such as a tick a host cut off from the
broker offers when the partition heals.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from croniter import croniter
from saq import Worker
from saq.job import Job

from domainjobs.runtime.pauses import paused_crons

logger = logging.getLogger("domainjobs")

#: A tick older than this (seconds, broker clock) is never enqueued: it was missed.
TICK_BOUND = 10.0


def tick_key(name: str, scheduled: int) -> str:
    """The job key of cron job ``name``'s tick at ``scheduled`` (epoch seconds)."""
    return f"cron:{name}:{scheduled}"


def upcoming_ticks(cron: str, start: datetime, horizon: float) -> list[int]:
    """The next tick after ``start``, and any other within ``horizon`` seconds of it."""
    ticks = croniter(cron, start)
    first = int(ticks.get_next())
    found = [first]
    limit = start.timestamp() + horizon
    while len(found) < 10:
        following = int(ticks.get_next())
        if following > limit:
            break
        found.append(following)
    return found


async def schedule_each_tick(worker: Worker[Any], lock: int = 1) -> None:
    """``Worker.schedule`` with one job key per tick (see the module docstring).

    Ticks up to two scheduler periods ahead are offered too, so a slow or late scheduler
    loop never lets a frequent cron skip a tick.
    """
    horizon = 2 * float(worker.timers["schedule"])
    paused = await paused_crons(worker.queue)  # paused from the dashboard
    for cron_job in worker.cron_jobs:
        options = dict(cron_job.__dict__)
        name = options.pop("function").__qualname__
        if name in paused:
            continue
        options.pop("unique", None)
        cron = options.pop("cron")
        enqueue_tick = getattr(worker.queue, "enqueue_tick", None)
        for scheduled in upcoming_ticks(cron, datetime.now(worker.cron_tz), horizon):
            fields = {k: v for k, v in options.items() if v is not None}
            key = tick_key(name, scheduled)
            if enqueue_tick is None:
                await worker.queue.enqueue(name, key=key, scheduled=scheduled, **fields)
                continue
            job_fields = {k: v for k, v in fields.items() if k in Job.__dataclass_fields__}
            job = Job(function=name, key=key, scheduled=scheduled, **job_fields)
            if options.get("kwargs") is not None:
                job.kwargs = dict(options["kwargs"])
            await enqueue_tick(job, scheduled, TICK_BOUND)
    job_ids = await worker.queue.schedule(lock)
    if job_ids:
        logger.debug("scheduled %s", job_ids)
