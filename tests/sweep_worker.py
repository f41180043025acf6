"""A worker process for the sweep-race tests and bench/lost_jobs.py.

    python -m tests.sweep_worker URL ROOTS APP_DIR SWEEP_PERIOD QUEUE_KWARGS_JSON [--plain] [--burst]

Builds the ``default`` queue's worker with ``domainjobs.build_worker`` and a sweep every
SWEEP_PERIOD seconds, runs it until SIGTERM (or, with ``--burst``, until the queue is
drained), then adds the number of sweeps it ran to
``sweeps`` in the counter Redis (``SWEEP_COUNTER_URL``). With ``--plain`` the queue is
plain SAQ's ``RedisQueue`` (the control group).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import redis.asyncio as aioredis
from saq.queue.redis import RedisQueue

from domainjobs import build_worker, discover, run_workers
from domainjobs.brokers.urls import queue_from_url


async def main(argv: list[str]) -> int:
    url, roots, app_dir, period, queue_kwargs = argv[:5]
    plain = "--plain" in argv
    sys.path.insert(0, app_dir)
    registry = discover(roots)
    if plain:
        queue = RedisQueue.from_url(url, name="default")
        sweep: float = max(1, round(float(period)))  # plain SAQ's SETEX takes whole seconds
    else:
        queue = queue_from_url(url, "default", **json.loads(queue_kwargs))
        sweep = float(period)
    worker = build_worker(registry, queue=queue, timers={"sweep": sweep}, burst="--burst" in argv)
    sweeps = 0
    original = queue.sweep

    async def counted(lock: int = 60, abort: float = 5.0) -> list[str]:
        nonlocal sweeps
        before = getattr(queue, "sweeps_run", None)
        swept = await original(lock, abort)
        if before is None or queue.sweeps_run > before:  # type: ignore[attr-defined]
            sweeps += 1
        return swept

    queue.sweep = counted  # type: ignore[method-assign]
    status = await run_workers([worker])
    counter = aioredis.from_url(os.environ["SWEEP_COUNTER_URL"])
    await counter.incrby("sweeps", sweeps)
    await counter.aclose()
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
