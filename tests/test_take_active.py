"""Take + mark active in one script (``SweepSafeRedisQueue.take_active``): what it stores
stays SAQ's job format, read back exactly by plain SAQ (``Queue.job``, a plain
``saq.Worker``), with SAQ's notification; a lapsed lease takes nothing.

Everything is real: a Redis server per session, plain SAQ queues and workers beside ours.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest
from saq import Worker
from saq.job import Status
from saq.queue.redis import RedisQueue

from domainjobs import build_worker, discover
from domainjobs.brokers.leases import FENCE
from domainjobs.brokers.redis import SweepSafeRedisQueue
from domainjobs.errors import LeaseLostError

#: Values cjson would re-encode wrongly (big ints, floats, empty lists): kept as they are.
AWKWARD: dict[str, Any] = {
    "big": 2**70 + 1,
    "negative": -(2**63) - 7,
    "tenth": 0.1 + 0.2,
    "tiny": 1e-300,
    "empty_list": [],
    "empty_map": {},
    "text": 'é "quoted" / slash \u2603',
    "nested": {"xs": [1, 2.5, None, True], "n": 12345678901234567890},
}

WORKER = "w-take-1"


async def test_a_job_taken_in_one_script_is_read_back_exactly_by_plain_saq(
    queue_pair: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queue_pair
    enqueued = await plain.enqueue("work", **AWKWARD)
    assert enqueued is not None
    before = await ours.redis.get(enqueued.id)
    pubsub = ours.redis.pubsub()
    await pubsub.subscribe(enqueued.id)
    await pubsub.get_message(timeout=5)  # the subscription's confirmation
    await ours.hold_lease(WORKER)

    job, marked = await ours.take_active(WORKER)

    assert marked and job is not None and job.key == enqueued.key
    assert (job.status, job.attempts, job.worker_id) == (Status.ACTIVE, 1, WORKER)
    assert job.kwargs == AWKWARD
    after = await ours.redis.get(enqueued.id)
    assert after.startswith(before[:-1])  # SAQ's bytes kept; new values appended
    message = None
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            break
    assert message is not None and message["data"] == b"active"
    await pubsub.aclose()

    seen = await plain.job(enqueued.key)
    assert seen is not None
    assert (seen.status, seen.attempts, seen.worker_id) == (Status.ACTIVE, 1, WORKER)
    assert seen.started == job.started and seen.started >= enqueued.queued
    assert seen.kwargs == AWKWARD
    assert type(seen.kwargs["big"]) is int and type(seen.kwargs["tenth"]) is float
    assert await ours.redis.lrange(ours._active, 0, -1) == [enqueued.id.encode()]
    assert await ours.redis.llen(ours._queued) == 0

    token = FENCE.set(WORKER)  # the fenced finish, as the worker writes it
    try:
        await job.finish(Status.COMPLETE, result={"big": 2**65})
    finally:
        FENCE.reset(token)
    done = await plain.job(enqueued.key)
    assert done is not None and done.status == Status.COMPLETE
    assert done.result == {"big": 2**65} and done.kwargs == AWKWARD
    stored = json.loads(await ours.redis.get(enqueued.id))
    assert stored["status"] == "complete"


async def test_a_plain_saq_worker_runs_a_job_whose_bytes_ours_appended_to(
    queue_pair: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queue_pair
    enqueued = await plain.enqueue("work", **AWKWARD)
    assert enqueued is not None
    await ours.hold_lease(WORKER)
    job, marked = await ours.take_active(WORKER)
    assert marked and job is not None
    # put it back as a sweep of old would, bytes untouched: a plain worker takes it next
    await ours.redis.lrem(ours._active, 0, job.id)
    await ours.redis.rpush(ours._queued, job.id)
    got: list[dict[str, Any]] = []

    async def work(ctx: dict[str, Any], **kwargs: Any) -> str:
        got.append(kwargs)
        return "ok"

    worker = Worker(plain, [("work", work)], concurrency=1, burst=True, dequeue_timeout=1.0)
    await asyncio.wait_for(worker.start(), 60)
    assert got == [AWKWARD]
    done = await plain.job(enqueued.key)
    assert done is not None and done.status == Status.COMPLETE and done.result == "ok"
    assert done.attempts == 2


async def test_a_lapsed_lease_takes_nothing(
    queue_pair: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queue_pair
    enqueued = await plain.enqueue("work", n=1)
    assert enqueued is not None
    await ours.hold_lease(WORKER)
    await ours.redis.hset(ours._leases, WORKER, 0)  # lapsed in the server's clock

    with pytest.raises(LeaseLostError):
        await ours.take_active(WORKER)

    assert await ours.redis.lrange(ours._queued, 0, -1) == [enqueued.id.encode()]
    assert await ours.redis.llen(ours._active) == 0
    stored = await plain.job(enqueued.key)
    assert stored is not None and stored.status == Status.QUEUED and stored.attempts == 0
    with pytest.raises(LeaseLostError):  # refused here too from now on, without a trip
        await ours.take_active(WORKER)


async def test_an_empty_queue_falls_back_to_saqs_blocking_take(
    queue_pair: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queue_pair
    await ours.hold_lease(WORKER)
    job, marked = await ours.take_active(WORKER, timeout=0.2)
    assert (job, marked) == (None, False)
    enqueued = await plain.enqueue("work", n=2)
    assert enqueued is not None
    job, marked = await ours.take_active(WORKER)
    assert marked and job is not None and job.kwargs == {"n": 2}


TASKS = """
from saq.queue.redis import RedisQueue

seen = []

async def look(ctx, **kwargs):
    job = ctx["job"]
    stored = await RedisQueue.job(job.queue, job.key)  # SAQ's own read, mid-run
    seen.append((job.status, job.attempts, job.worker_id, stored.status, stored.attempts,
                 stored.worker_id, stored.kwargs == kwargs))
    return kwargs
"""


async def test_a_worker_runs_jobs_it_took_in_one_script_once_each(
    redis_url: str, make_app: Any
) -> None:
    base = make_app({"app/domain/a/jobs/tasks.py": TASKS})
    registry = discover(f"{base.name}.domain", entry_points=False)
    queue = SweepSafeRedisQueue.from_url(redis_url, name="default")
    worker = build_worker(registry, queue=queue, concurrency=3, burst=True)
    await queue.connect()
    try:
        jobs = [await queue.enqueue("a.look", i=i, big=2**64 + i) for i in range(6)]
        await asyncio.wait_for(worker.start(), 60)
        module = importlib.import_module(f"{base.name}.domain.a.jobs.tasks")
        assert len(module.seen) == 6
        for status, attempts, worker_id, s_status, s_attempts, s_worker, same in module.seen:
            assert (status, attempts, worker_id) == (Status.ACTIVE, 1, worker.id)
            assert (s_status, s_attempts, s_worker, same) == (Status.ACTIVE, 1, worker.id, True)
        for job in jobs:
            assert job is not None
            done = await queue.job(job.key)
            assert done is not None and done.status == Status.COMPLETE
            assert done.attempts == 1 and done.result == job.kwargs
    finally:
        await queue.disconnect()
