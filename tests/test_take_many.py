"""Several jobs in one take (``SweepSafeRedisQueue.take_active_many``) and the worker's
shared takes (``domainjobs.runtime.takes.TakeCoalescer``): one script call takes as many jobs
as slots wait, each marked active in SAQ's format; a job taken for a slot that is gone goes
back to the head of its queue as it was (not lost, no attempt counted); under load and
through a graceful stop every job runs exactly once and none is marked lost; a plain
``saq.Worker`` sharing the queue still works.

Everything is real: Redis servers, ``python -m domainjobs run`` worker processes, SIGTERM,
plain SAQ queues and workers beside ours. Script calls are counted by the server
(``INFO commandstats``).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from saq import Worker
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from domainjobs import build_worker, discover
from domainjobs.brokers.leases import TakenJob
from domainjobs.brokers.redis import PUT_BACK, SweepSafeRedisQueue
from domainjobs.brokers.sweep import LOST_COUNT_KEY
from domainjobs.brokers.urls import queue_from_url
from domainjobs.runtime.takes import TakeCoalescer
from tests.fault_helpers import (
    Counts,
    enqueue_at,
    enqueue_many,
    fault_app,
    log_of,
    read_statuses,
    start_worker,
    stop_all,
    summary,
    wait_all_done,
)
from tests.servers import wait_for

WORKER = "w-take-many-1"


async def calls(client: aioredis.Redis, command: str) -> int:
    """How often the server ran ``command`` so far (``INFO commandstats``)."""
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


@pytest.fixture
async def queues(redis_url: str) -> AsyncIterator[tuple[SweepSafeRedisQueue, RedisQueue]]:
    ours = SweepSafeRedisQueue.from_url(redis_url, name="default")
    plain = RedisQueue.from_url(redis_url, name="default")
    await ours.connect()
    await plain.connect()
    await ours.hold_lease(WORKER)
    # load the scripts, so the server's counts of script calls are exact
    assert await ours.take_active_many(WORKER, 1) == []
    assert await ours._script(PUT_BACK)(keys=[ours._active, ours._queued], args=[]) == 0
    try:
        yield ours, plain  # type: ignore[misc]
    finally:
        await ours.disconnect()
        await plain.disconnect()


async def _enqueue(plain: RedisQueue, n: int) -> tuple[list[str], list[bytes]]:
    """``n`` jobs enqueued by plain SAQ; their ids and stored bytes."""
    ids = []
    for i in range(n):
        job = await plain.enqueue("work", i=i, big=2**70 + i)
        assert job is not None
        ids.append(job.id)
    return ids, [await plain.redis.get(job_id) for job_id in ids]


async def _push_at_once(plain: RedisQueue, n: int) -> list[str]:
    """``n`` jobs stored and queued as SAQ's enqueue does, all in one transaction (a slot
    blocked on the queue wakes with all of them there)."""
    jobs = [Job("work", kwargs={"i": i}, queue=plain, status=Status.QUEUED) for i in range(n)]
    async with plain.redis.pipeline(transaction=True) as pipe:
        for job in jobs:
            job.queued = now()
            pipe.set(job.id, plain.serialize(job))
            pipe.zadd(plain._incomplete, {job.id: job.scheduled})
        pipe.rpush(plain._queued, *(job.id for job in jobs))
        await pipe.execute()
    return [job.id for job in jobs]


async def test_one_script_call_takes_several_jobs_and_marks_each_in_saqs_format(
    queues: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queues
    ids, before = await _enqueue(plain, 5)
    scripts, publishes = await calls(ours.redis, "evalsha"), await calls(ours.redis, "publish")

    taken = await ours.take_active_many(WORKER, 3)

    assert await calls(ours.redis, "evalsha") == scripts + 1  # one round trip
    assert await calls(ours.redis, "publish") == publishes + 3  # SAQ's notification, per job
    assert [t.job.id for t in taken] == ids[:3]  # in queue order
    for each, old in zip(taken, before, strict=False):
        assert each.marked and each.fence == WORKER
        assert (each.job.status, each.job.attempts, each.job.worker_id) == (
            Status.ACTIVE,
            1,
            WORKER,
        )
        stored = await ours.redis.get(each.job.id)
        assert stored == each.stored and stored.startswith(old[:-1]) and each.cut == len(old)
        seen = await plain.job(each.job.key)  # SAQ's own read
        assert seen is not None and (seen.status, seen.attempts) == (Status.ACTIVE, 1)
        assert seen.kwargs == each.job.kwargs and type(seen.kwargs["big"]) is int
    assert await ours.redis.lrange(ours._active, 0, -1) == [i.encode() for i in ids[:3]]
    assert await ours.redis.lrange(ours._queued, 0, -1) == [i.encode() for i in ids[3:]]

    rest = await ours.take_active_many(WORKER, 10)  # the queue runs dry: fewer than asked
    assert [t.job.id for t in rest] == ids[3:]
    assert await ours.take_active_many(WORKER, 4) == []
    assert await calls(ours.redis, "evalsha") == scripts + 3


async def test_put_back_restores_the_bytes_at_the_head_of_the_queue_unless_changed(
    queues: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queues
    ids, before = await _enqueue(plain, 4)
    taken = await ours.take_active_many(WORKER, 3)
    scripts = await calls(ours.redis, "evalsha")

    assert await ours.put_back(taken[:2]) == 2

    assert await calls(ours.redis, "evalsha") == scripts + 1  # one script for both
    assert await ours.redis.lrange(ours._queued, 0, -1) == [
        ids[0].encode(),
        ids[1].encode(),
        ids[3].encode(),
    ]
    assert await ours.redis.lrange(ours._active, 0, -1) == [ids[2].encode()]
    for job_id, old in zip(ids[:2], before[:2], strict=True):
        assert await ours.redis.get(job_id) == old  # as before the take: no attempt, not lost
        back = plain.deserialize(await plain.redis.get(job_id))
        assert back is not None and back.status == Status.QUEUED and back.attempts == 0
        assert LOST_COUNT_KEY not in (back.meta or {})

    # compare-and-set: a job something else wrote to since its take stays as it is
    [again] = await ours.take_active_many(WORKER, 1)
    assert again.job.id == ids[0]
    changed = again.stored[:-1] + b', "touched": 1}'
    await ours.redis.set(again.job.id, changed)
    assert await ours.put_back([again, taken[2]]) == 1
    assert await ours.redis.get(again.job.id) == changed
    assert await ours.redis.lrange(ours._active, 0, -1) == [ids[0].encode()]
    assert await ours.redis.lrange(ours._queued, 0, -1) == [
        ids[2].encode(),
        ids[1].encode(),
        ids[3].encode(),
    ]
    assert await ours.redis.get(ids[2]) == before[2]


def _coalescer(
    queue: SweepSafeRedisQueue, around: Callable[[], None] | None = None, wait: float = 0.5
) -> TakeCoalescer:
    """A coalescer on the real queue under ``WORKER``'s lease; ``around`` runs just as a
    take comes back (before its jobs are handed out); a slot waits ``wait`` seconds on the
    empty queue."""

    async def take_many(n: int) -> list[TakenJob]:
        taken = await queue.take_active_many(WORKER, n)
        if around is not None:
            around()
        return taken

    async def wait_for_job() -> TakenJob | None:
        job = await queue.wait_for_job(timeout=wait)
        return None if job is None else TakenJob(job, False, WORKER)

    return TakeCoalescer(take_many, queue.put_back, wait_for_job, lambda: False)


async def test_slots_that_wait_together_share_one_round_trip(
    queues: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queues
    ids, _ = await _enqueue(plain, 12)
    takes = _coalescer(ours)
    scripts = await calls(ours.redis, "evalsha")

    got = await asyncio.gather(*(takes.take() for _ in range(10)))

    assert await calls(ours.redis, "evalsha") == scripts + 1
    assert [g.job.id for g in got if g is not None] == ids[:10]  # in the order they joined
    assert (takes.round_trips, takes.jobs_taken) == (1, 10)
    assert await ours.redis.lrange(ours._queued, 0, -1) == [i.encode() for i in ids[10:]]

    # three slots, two jobs left: the third comes back empty after one blocking take
    last = await asyncio.gather(*(takes.take() for _ in range(3)))
    assert [g.job.id for g in last if g is not None] == ids[10:]
    assert last[2] is None


async def test_an_idle_worker_waits_on_one_connection_and_parked_slots_take_together(
    queues: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    """Ten slots on an empty queue: one take finds it empty, one slot waits on it, nine
    park (no round trip). Three jobs come: the waiting slot gets one, the parked slots take
    the other two in one more script call."""
    ours, plain = queues
    takes = _coalescer(ours, wait=5.0)
    scripts, moves = await calls(ours.redis, "evalsha"), await calls(ours.redis, "blmove")
    slots = [asyncio.create_task(takes.take()) for _ in range(10)]
    for _ in range(1000):  # a poll with a deadline: one slot waits on the queue
        if takes._blocking:
            break
        await asyncio.sleep(0.01)
    assert takes._blocking and len(takes._parked) == 9
    assert await calls(ours.redis, "evalsha") == scripts + 1

    ids = await _push_at_once(plain, 3)
    for _ in range(1000):  # a poll with a deadline: three slots have their job
        if sum(slot.done() for slot in slots) >= 3:
            break
        await asyncio.sleep(0.01)
    first = [slot.result() for slot in slots if slot.done()]

    assert sorted(t.job.id for t in first if t is not None) == sorted(ids)
    assert sum(1 for t in first if t is not None and t.marked) == 2  # taken by the script
    assert await calls(ours.redis, "evalsha") == scripts + 2
    rest = await asyncio.wait_for(asyncio.gather(*slots), 30)  # the next wait comes back empty
    assert sum(1 for t in rest if t is not None) == 3
    assert await calls(ours.redis, "blmove") == moves + 2


async def test_a_job_taken_for_a_cancelled_slot_goes_back_to_the_head_of_its_queue(
    queues: tuple[SweepSafeRedisQueue, RedisQueue], redis_url: str
) -> None:
    """The take is on its way (the server holds it: ``CLIENT PAUSE WRITE``) when two of the
    three slots it was sent for are cancelled: their jobs go back, as they were."""
    ours, plain = queues
    ids, before = await _enqueue(plain, 5)
    takes = _coalescer(ours)
    admin = aioredis.from_url(redis_url)
    await admin.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    try:
        slots = [asyncio.create_task(takes.take()) for _ in range(3)]
        for _ in range(500):  # a poll with a deadline: the take has asked for three jobs
            if takes.in_flight == 3:
                break
            await asyncio.sleep(0.01)
        assert takes.in_flight == 3
        slots[0].cancel()
        slots[1].cancel()
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    kept = await asyncio.wait_for(slots[2], 30)
    await takes.close()

    assert kept is not None and kept.job.id == ids[0]  # the live slot gets the first job
    assert all(slot.cancelled() for slot in slots[:2])
    assert takes.put_back_count == 2
    assert await ours.redis.lrange(ours._active, 0, -1) == [ids[0].encode()]
    assert await ours.redis.lrange(ours._queued, 0, -1) == [i.encode() for i in ids[1:]]
    for job_id, old in zip(ids[1:3], before[1:3], strict=True):
        assert await ours.redis.get(job_id) == old


async def test_a_slot_cancelled_as_its_job_is_handed_over_gives_it_back(
    queues: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    """The slot is cancelled after the take handed it its job but before it ran again."""
    ours, plain = queues
    ids, before = await _enqueue(plain, 2)
    slot: list[asyncio.Task[Any]] = []
    loop = asyncio.get_running_loop()
    takes = _coalescer(ours, around=lambda: loop.call_soon(slot[0].cancel))
    slot.append(asyncio.create_task(takes.take()))

    with pytest.raises(asyncio.CancelledError):
        await slot[0]
    await takes.close()

    assert takes.put_back_count == 1
    assert await ours.redis.llen(ours._active) == 0
    assert await ours.redis.lrange(ours._queued, 0, -1) == [i.encode() for i in ids]
    assert await ours.redis.get(ids[0]) == before[0]


TASKS = """
runs = {}

async def count(ctx, **kwargs):
    key = ctx["job"].key
    runs[key] = runs.get(key, 0) + 1
    return kwargs
"""


async def test_a_worker_takes_a_job_per_free_slot_in_one_call(
    redis_url: str, make_app: Any
) -> None:
    """Ten free slots, ten jobs: one script call takes all ten (one ``started`` stamp)."""
    base = make_app({"app/domain/a/jobs/tasks.py": TASKS})
    registry = discover(f"{base.name}.domain", entry_points=False)
    queue = SweepSafeRedisQueue.from_url(redis_url, name="default")
    worker = build_worker(registry, queue=queue, concurrency=10, burst=True)
    await queue.connect()
    try:
        jobs = [await queue.enqueue("a.count", i=i) for i in range(10)]
        await asyncio.wait_for(worker.start(), 60)
        module = importlib.import_module(f"{base.name}.domain.a.jobs.tasks")
        assert sorted(module.runs.values()) == [1] * 10
        done = [await queue.job(job.key) for job in jobs if job is not None]
        assert all(d is not None and d.status == Status.COMPLETE for d in done)
        assert all(d is not None and d.attempts == 1 for d in done)
        assert len({d.started for d in done if d is not None}) == 1  # stamped by one call
        assert worker.takes is not None and worker.takes.jobs_taken == 10
    finally:
        await queue.disconnect()


@pytest.mark.parametrize("hook_ms", [0, 20])
async def test_a_stop_that_cancels_waiting_slots_strands_no_job(
    redis_url: str, make_app: Any, hook_ms: int
) -> None:
    """SAQ's own stop (``Worker.stop``: no grace, every slot cancelled) in the middle of a
    drain: nothing is left taken, no job is marked lost; a second worker drains the rest.
    With a ``before_process`` hook that waits, slots are also cancelled between the take
    and the start of their job."""

    async def hook(ctx: dict[str, Any]) -> None:
        if hook_ms:
            await asyncio.sleep(hook_ms / 1000)

    base = make_app({"app/domain/a/jobs/tasks.py": TASKS})
    registry = discover(f"{base.name}.domain", entry_points=False)
    queue = SweepSafeRedisQueue.from_url(redis_url, name="default")
    await queue.connect()
    keys = await enqueue_many(queue, "a.count", 600)
    module = importlib.import_module(f"{base.name}.domain.a.jobs.tasks")
    first = build_worker(registry, queue=queue, concurrency=10, before_process=hook)
    running = asyncio.create_task(first.start())
    try:
        for _ in range(3000):
            if len(module.runs) >= 100:
                break
            await asyncio.sleep(0.01)
        assert len(module.runs) >= 100
        first.event.set()  # SAQ's stop: every slot cancelled at once
        await asyncio.wait_for(running, 60)
        assert first.takes is not None
        print(f"stopped after {len(module.runs)} jobs; put back {first.takes.put_back_count}")
        assert await queue.redis.llen(queue._active) == 0  # none left taken
    finally:
        await queue.disconnect()  # ends the lease: a stranded job would be swept as lost

    queue = SweepSafeRedisQueue.from_url(redis_url, name="default")
    await queue.connect()
    try:
        second = build_worker(registry, queue=queue, concurrency=10, burst=True)
        await asyncio.wait_for(second.start(), 120)
        jobs = await queue.jobs(keys)
        assert all(j is not None and j.status == Status.COMPLETE for j in jobs)
        assert not [j.key for j in jobs if j is not None and LOST_COUNT_KEY in (j.meta or {})]
        assert set(module.runs) == set(keys)
    finally:
        await queue.disconnect()


# -- real worker processes ----------------------------------------------------------------


@pytest.fixture
def app(make_app: Callable[..., Path]) -> tuple[str, str]:
    return fault_app(make_app)


async def _lost(url: str, keys: list[str]) -> list[str]:
    """The jobs whose meta says a worker was lost under them."""
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        lost = []
        for start in range(0, len(keys), 500):
            for job in await queue.jobs(keys[start : start + 500]):
                if job is not None and LOST_COUNT_KEY in (job.meta or {}):
                    lost.append(job.key)
        return lost
    finally:
        await queue.disconnect()


async def _script_calls(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        return await calls(client, "evalsha")
    finally:
        await client.aclose()


@pytest.mark.timeout(300)  # real processes on a loaded box
def test_under_load_every_job_runs_once_and_takes_share_round_trips(
    redis_url: str, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    """2,000 jobs, two processes at concurrency 10: each job runs exactly once, in fewer
    script calls than a take and a finish per job."""
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    keys = asyncio.run(enqueue_at(redis_url, "faults.touch", 2000))
    scripts = asyncio.run(_script_calls(redis_url))
    workers = [
        start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
        for _ in range(2)
    ]
    try:
        statuses = wait_all_done(read_statuses(redis_url, keys), len(keys), timeout=180)
        used = asyncio.run(_script_calls(redis_url)) - scripts
        runs, done = counts.runs(keys), counts.done(keys)
        figures = summary(statuses, runs, done)
        print("under load:", figures, f"{used} script calls for {len(keys)} jobs")
        assert figures["lost"] == 0 and figures["ran_twice"] == 0, figures
        assert done == [1] * len(keys)
        # a take and a finish per job would be 2 per job (plus sweeps and idle takes)
        assert used < 1.8 * len(keys), used
    finally:
        codes = stop_all(workers)
        counts.close()
    assert codes == [0, 0], [log_of(w)[-2000:] for w in workers]
    assert not asyncio.run(_lost(redis_url, keys))


@pytest.mark.timeout(300)  # real processes and signals on a loaded box
def test_sigterm_in_the_middle_of_a_drain_loses_nothing_and_marks_no_job_lost(
    redis_url: str, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    keys = asyncio.run(enqueue_at(redis_url, "faults.touch", 1500, work_ms=20))
    first = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
    second = None
    try:
        wait_for(lambda: sum(counts.runs(keys)) >= 150, timeout=90, what="the drain to start")
        first.terminate()
        assert first.wait(60) == 0, log_of(first)
        ran = sum(1 for r in counts.runs(keys) if r)
        assert ran < len(keys), "the drain ended before the stop: nothing was tested"
        second = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
        statuses = wait_all_done(read_statuses(redis_url, keys), len(keys), timeout=180)
        runs, done = counts.runs(keys), counts.done(keys)
        figures = summary(statuses, runs, done)
        print(f"SIGTERM after {ran} of {len(keys)} jobs:", figures)
        assert figures["lost"] == 0 and figures["ran_twice"] == 0, figures
        assert done == [1] * len(keys)
        assert not asyncio.run(_lost(redis_url, keys))
    finally:
        codes = stop_all([p for p in (first, second) if p is not None])
        counts.close()
    assert all(c == 0 for c in codes), codes


@pytest.mark.timeout(300)
async def test_a_plain_saq_worker_sharing_the_queue_still_works(
    redis_url: str, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    """A ``domainjobs run`` process and a hand-written ``saq.Worker`` drain one queue
    together: every job runs exactly once, whichever worker took it."""
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    counter = aioredis.from_url(fresh_redis_url)
    plain_runs: list[str] = []

    async def touch(ctx: dict[str, Any], work_ms: int = 0) -> None:
        key = ctx["job"].key
        plain_runs.append(key)
        await counter.incr("runs:" + key)
        if work_ms:
            await asyncio.sleep(work_ms / 1000)
        await counter.incr("done:" + key)

    plain = RedisQueue.from_url(redis_url, name="default")
    await plain.connect()
    keys = await enqueue_many(plain, "faults.touch", 1500, work_ms=20)
    ours = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
    worker = Worker(plain, [("faults.touch", touch)], concurrency=5, burst=True, dequeue_timeout=2)
    try:
        await asyncio.to_thread(
            wait_for, lambda: counts.runs(keys[:1]) == [1], timeout=60, what="our worker"
        )
        await asyncio.wait_for(worker.start(), 180)
        statuses = await asyncio.to_thread(
            wait_all_done, read_statuses(redis_url, keys), len(keys), 180
        )
        runs, done = counts.runs(keys), counts.done(keys)
        figures = summary(statuses, runs, done)
        print(f"plain SAQ ran {len(plain_runs)} of {len(keys)}:", figures)
        assert figures["lost"] == 0 and figures["ran_twice"] == 0, figures
        assert done == [1] * len(keys)
        assert plain_runs, "the plain worker took no job: nothing was tested"
        assert len(plain_runs) < len(keys), "our worker took no job: nothing was tested"
    finally:
        codes = await asyncio.to_thread(stop_all, [ours])
        await plain.disconnect()
        await counter.aclose()
        counts.close()
    assert codes == [0], log_of(ours)[-2000:]
