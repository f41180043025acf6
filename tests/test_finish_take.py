"""Finish + take in one round trip (``SweepSafeRedisQueue.finish(..., take_next=...)``): a
slot's finished job and its next job cost one script, the job so taken is started by the
next free slot without a take of its own, and one that no slot will start (the worker
stops) goes back to the head of its queue exactly as it was, not counted as lost.

Everything is real: a Redis server, plain SAQ queues beside ours, worker processes and
SIGTERM, every run counted in a separate counter Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from saq.job import Status
from saq.queue.redis import RedisQueue

from domainjobs import build_worker, discover
from domainjobs.brokers.leases import FENCE, TakenJob
from domainjobs.brokers.redis import FINISH_TAKE, SweepSafeRedisQueue
from domainjobs.brokers.sweep import LOST_COUNT_KEY
from domainjobs.brokers.urls import queue_from_url
from domainjobs.errors import LeaseLostError
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

WORKER = "w-finish-take"


async def test_a_finish_takes_the_next_job_and_a_put_back_restores_it_exactly(
    queue_pair: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queue_pair
    first = await plain.enqueue("work", n=1)
    second = await plain.enqueue("work", n=2, big=2**70 + 1)
    assert first is not None and second is not None
    original = await ours.redis.get(second.id)
    await ours.hold_lease(WORKER)
    job, marked = await ours.take_active(WORKER)
    assert marked and job is not None and job.key == first.key

    ahead: list[TakenJob] = []
    token = FENCE.set(WORKER)
    try:
        await ours.finish(job, Status.COMPLETE, result=7, take_next=ahead)
    finally:
        FENCE.reset(token)

    done = await plain.job(first.key)
    assert done is not None and (done.status, done.result) == (Status.COMPLETE, 7)
    [taken] = ahead
    assert taken.job.key == second.key and taken.fence == WORKER and taken.marked
    stored = await plain.job(second.key)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.worker_id) == (Status.ACTIVE, 1, WORKER)
    assert await ours.redis.lrange(ours._active, 0, -1) == [second.id.encode()]

    third = await plain.enqueue("work", n=3)
    assert third is not None
    assert await ours.put_back(ahead) == 1  # as a worker that stops before starting it
    assert await ours.redis.get(second.id) == original  # byte for byte as enqueued
    assert await ours.redis.lrange(ours._queued, 0, -1) == [second.id.encode(), third.id.encode()]
    assert await ours.redis.llen(ours._active) == 0
    back = await plain.job(second.key)
    assert back is not None and (back.status, back.attempts) == (Status.QUEUED, 0)
    assert LOST_COUNT_KEY not in (back.meta or {})


async def test_a_refused_finish_takes_nothing(
    queue_pair: tuple[SweepSafeRedisQueue, RedisQueue],
) -> None:
    ours, plain = queue_pair
    first = await plain.enqueue("work", n=1)
    second = await plain.enqueue("work", n=2)
    assert first is not None and second is not None
    await ours.hold_lease(WORKER)
    job, _ = await ours.take_active(WORKER)
    assert job is not None
    await ours.redis.hset(ours._leases, WORKER, 0)  # the lease lapsed meanwhile

    ahead: list[TakenJob] = []
    token = FENCE.set(WORKER)
    try:
        with pytest.raises(LeaseLostError):
            await ours.finish(job, Status.COMPLETE, take_next=ahead)
    finally:
        FENCE.reset(token)
    assert ahead == []
    assert await ours.redis.lrange(ours._queued, 0, -1) == [second.id.encode()]


async def test_a_worker_draining_its_queue_pays_about_one_round_trip_per_job(
    redis_url: str, make_app: Callable[..., Path]
) -> None:
    base = make_app(
        {
            "app/domain/drain/jobs/tasks.py": """
                RUNS = []


                async def record(ctx) -> None:
                    RUNS.append(ctx["job"].key)
            """
        }
    )
    roots = f"{base.name}.domain"
    registry = discover(roots, entry_points=False)
    queue = queue_from_url(redis_url, "default")
    await queue.connect()
    worker = build_worker(registry, queue=queue, concurrency=10)
    n = 600
    try:
        keys = await enqueue_many(queue, "drain.record", n)
        module = importlib.import_module(f"{roots}.drain.jobs.tasks")
        runs: list[str] = module.RUNS
        runs.clear()
        before = (await queue.redis.info("commandstats")).get("cmdstat_evalsha", {})
        task = asyncio.create_task(worker.start())
        for _ in range(1200):
            if len(runs) >= n:
                break
            await asyncio.sleep(0.05)
        after = (await queue.redis.info("commandstats")).get("cmdstat_evalsha", {})
        await worker.stop()
        await task
    finally:
        await queue.disconnect()
    assert sorted(runs) == sorted(keys)  # every job once
    scripts = after.get("calls", 0) - before.get("calls", 0)
    # One script per job (finish + take), plus each slot's first take, the empty queue at
    # the end and the upkeep's; two per job before finish and take were one.
    assert scripts < n * 1.25, (scripts, n)


async def test_a_worker_stopped_between_a_finish_and_its_next_job_puts_that_job_back(
    redis_url: str, make_app: Callable[..., Path]
) -> None:
    base = make_app({"app/domain/one/jobs/tasks.py": "async def work(ctx) -> None:\n    pass\n"})
    registry = discover(f"{base.name}.domain", entry_points=False)
    queue = queue_from_url(redis_url, "default")
    await queue.connect()
    stopped = asyncio.Event()
    taken_ahead: list[str] = []

    async def stop_after_the_first_job(ctx: dict[str, object]) -> None:
        taken_ahead.extend(taken.job.key for taken in worker.ahead)
        worker.stop_taking_jobs()  # after the finish that took the next job ahead
        stopped.set()

    worker = build_worker(
        registry, queue=queue, concurrency=1, after_process=[stop_after_the_first_job]
    )
    try:
        jobs = [await queue.enqueue("one.work") for _ in range(2)]  # one after the other
        first, second = [job.key for job in jobs if job is not None]
        original = await queue.redis.get(queue.job_id(second))  # type: ignore[attr-defined]
        task = asyncio.create_task(worker.start())
        await asyncio.wait_for(stopped.wait(), 30)
        await worker.stop()
        await task
        assert taken_ahead == [second]
        done, back = await queue.job(first), await queue.job(second)
        assert done is not None and done.status == Status.COMPLETE
        assert back is not None and (back.status, back.attempts) == (Status.QUEUED, 0)
        assert await queue.redis.get(queue.job_id(second)) == original  # type: ignore[attr-defined]
        assert await queue.redis.llen(queue.namespace("active")) == 0  # type: ignore[attr-defined]
    finally:
        await queue.disconnect()


@pytest.mark.timeout(300)  # real processes on a loaded box
def test_sigterm_in_the_middle_of_a_drain_puts_taken_ahead_jobs_back_unharmed(
    redis_url: str, fresh_redis_url: str, make_app: Callable[..., Path]
) -> None:
    roots, app_dir = fault_app(make_app)
    counts = Counts(fresh_redis_url)
    keys = asyncio.run(enqueue_at(redis_url, "faults.touch", 1500, work_ms=5))
    worker = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
    try:
        wait_for(lambda: sum(counts.done(keys)) >= 300, timeout=120, what="load")
    finally:
        assert stop_all([worker]) == [0], log_of(worker)
    stored = asyncio.run(_stored(redis_url, keys))
    active = [key for key, job in stored.items() if job["status"] == "active"]
    assert active == [], active  # nothing left behind for the sweep
    lost = [key for key, job in stored.items() if LOST_COUNT_KEY in (job.get("meta") or {})]
    assert lost == [], lost
    queued = [job for job in stored.values() if job["status"] == "queued"]
    assert queued and all(job.get("attempts", 0) == 0 for job in queued)

    second = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
    try:
        statuses = wait_all_done(read_statuses(redis_url, keys), len(keys), timeout=180)
    finally:
        stop_all([second])
    figures = summary(statuses, counts.runs(keys), counts.done(keys))
    print(f"SIGTERM mid-drain: {figures}")
    assert figures["lost"] == 0 and figures["ran_twice"] == 0, figures


async def _stored(url: str, keys: list[str]) -> dict[str, dict[str, object]]:
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        ids = [queue.job_id(key) for key in keys]
        payloads = await queue.redis.mget(ids)  # type: ignore[attr-defined]
        return {key: json.loads(p) for key, p in zip(keys, payloads, strict=True) if p}
    finally:
        await queue.disconnect()


class ReplyHolder:
    """A TCP proxy on loopback between a worker and Redis. Once ``arm``ed, it holds back the
    answer to the next command carrying ``marker`` (until ``release``): the command runs on
    the server, its reply is late, every other connection goes on."""

    def __init__(self, port: int, marker: bytes) -> None:
        self.port, self.marker = port, marker
        self.armed = False
        self.held: list[asyncio.Event] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def arm(self) -> None:
        self.armed = True

    def release(self) -> None:
        for gate in self.held:
            gate.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        gate = asyncio.Event()
        gate.set()

        async def requests() -> None:
            try:
                while data := await reader.read(65536):
                    if self.armed and self.marker in data:
                        self.armed = False
                        gate.clear()
                        self.held.append(gate)
                    up_writer.write(data)
                    await up_writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                up_writer.close()

        async def replies() -> None:
            try:
                while data := await up_reader.read(65536):
                    await gate.wait()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(requests(), replies())

    async def close(self) -> None:
        self.release()
        if self.server is not None:
            self.server.close()


async def test_a_slot_cancelled_while_its_finish_takes_the_next_job_strands_nothing(
    redis_url: str, make_app: Callable[..., Path]
) -> None:
    # The finish script runs on the server, but its answer is held back (a proxy) while the
    # worker stops with SAQ's grace of 0: the slot is cancelled before the reply comes, so
    # the job the script took for it is known to nobody. The stop finds it and puts it back
    # as it was, not counted as lost.
    import redis.asyncio as aioredis

    base = make_app(
        {
            "app/domain/one/jobs/tasks.py": """
                HOLD = []


                async def work(ctx, first: bool) -> None:
                    if first:
                        HOLD[0]()  # the answer to this job's finish will be held
            """
        }
    )
    registry = discover(f"{base.name}.domain", entry_points=False)
    module = importlib.import_module(f"{base.name}.domain.one.jobs.tasks")
    host_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = ReplyHolder(host_port, hashlib.sha1(FINISH_TAKE.encode()).hexdigest().encode())
    port = await proxy.start()
    module.HOLD.append(proxy.arm)
    queue = queue_from_url(f"redis://127.0.0.1:{port}/0", "default")
    await queue.connect()
    admin = aioredis.from_url(redis_url)
    worker = build_worker(registry, queue=queue, concurrency=1)
    try:
        first = await queue.enqueue("one.work", first=True)
        second = await queue.enqueue("one.work", first=False)
        assert first is not None and second is not None
        original = await admin.get(second.id)
        await admin.script_load(FINISH_TAKE)  # its first call is the real one, not NOSCRIPT
        running = asyncio.create_task(worker.start())
        for _ in range(3000):  # poll with a deadline: the finish ran on the server
            if b'"status": "active"' in (await admin.get(second.id) or b""):
                break
            await asyncio.sleep(0.01)
        assert b'"status": "active"' in await admin.get(second.id)  # taken, answer held
        worker.event.set()  # SAQ's stop: grace 0, the slot cancelled with its finish held
        await asyncio.wait_for(running, 60)
        proxy.release()

        assert worker.strays_put_back == 1

        done, back = await queue.job(first.key), await queue.job(second.key)
        assert done is not None and done.status == Status.COMPLETE
        assert back is not None and (back.status, back.attempts) == (Status.QUEUED, 0)
        assert LOST_COUNT_KEY not in (back.meta or {})
        assert await admin.get(second.id) == original
        assert await admin.llen(queue.namespace("active")) == 0  # type: ignore[attr-defined]
    finally:
        await admin.aclose()
        await queue.disconnect()
        await proxy.close()
