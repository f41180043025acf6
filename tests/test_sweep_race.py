"""No job is lost to SAQ's sweep race, and a dead worker's jobs run again within
``RECOVERY_BOUND`` seconds (docs/reliability.md).

Everything is real: fresh Redis servers, a throwaway PostgreSQL cluster, worker processes
started together, SIGKILL. Each task counts its own runs with an INCR in Redis, and every
job's final status is read back from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import redis
from saq import Worker
from saq.job import Job
from saq.queue.redis import RedisQueue

from domainjobs import build_worker, discover
from domainjobs.brokers.redis import SweepSafeRedisQueue
from domainjobs.brokers.sweep import LOST_COUNT_KEY, RECOVERY_BOUND, SWEEP_PERIOD
from domainjobs.brokers.urls import queue_from_url
from domainjobs.runtime.worker import WORKER_DEFAULTS
from tests.servers import redis_server, wait_for
from tests.sweep_helpers import (
    final_statuses,
    race_app,
    run_counts,
    start_cli_worker,
    start_script_worker,
    stderr_of,
    stop,
    summary,
)

#: Slack for a loaded 2-core machine on top of the documented bound.
SLACK = 4.0


async def enqueue_many(queue: RedisQueue | object, name: str, n: int, **kw: object) -> list[str]:
    """Enqueue ``n`` jobs of ``name``; return their keys."""
    jobs = await asyncio.gather(*(queue.enqueue(name, **kw) for _ in range(n)))  # type: ignore[attr-defined]
    return [job.key for job in jobs]


async def drain_with(worker: Worker) -> None:
    """Run a burst worker until it has drained its queue."""
    await asyncio.wait_for(worker.start(), 60)


def test_worker_defaults_sweep_often() -> None:
    assert WORKER_DEFAULTS["timers"]["sweep"] == SWEEP_PERIOD
    assert SWEEP_PERIOD < 60  # SAQ's default
    assert RECOVERY_BOUND <= 15


# -- the race exists in plain SAQ, and not in ours ---------------------------------------


async def _first_moments(url: str, counter_url: str, roots: str, *, plain: bool, n: int) -> tuple:
    """Enqueue ``n`` jobs on a brand-new server and drain them with one burst worker."""
    registry = discover(roots)
    if plain:
        queue: RedisQueue = RedisQueue.from_url(url, name="default")
        functions = [(spec.name, spec.function) for spec in registry.tasks_for("default")]
        worker: Worker = Worker(queue, functions, concurrency=50, burst=True, dequeue_timeout=1.0)
    else:
        queue = queue_from_url(url, "default")  # type: ignore[assignment]
        worker = build_worker(registry, queue=queue, concurrency=50, burst=True)
    await queue.connect()
    try:
        keys = await enqueue_many(queue, "race.touch", n)
        await drain_with(worker)
        statuses = await final_statuses(queue, keys)
    finally:
        await queue.disconnect()
    return statuses, run_counts(counter_url, keys)


@pytest.fixture
def race_roots(make_app, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fixture app's domains root, its tasks counting runs in ``redis_url``."""
    monkeypatch.setenv("SWEEP_COUNTER_URL", redis_url)
    return race_app(make_app)[0]


async def test_plain_saq_loses_jobs_at_a_fresh_servers_first_sweep(
    redis_url: str, race_roots: str
) -> None:
    """The race is real in the pinned SAQ: one plain saq.Worker on a fresh server."""
    seen = []
    for _attempt in range(6):  # one observation proves it; retry in case timing hid it
        with redis_server() as url:
            statuses, runs = await _first_moments(url, redis_url, race_roots, plain=True, n=200)
        seen.append(summary(statuses, runs))
        if statuses["complete"] < 200:
            break
    assert statuses["complete"] < 200, f"plain SAQ lost nothing this time: {seen}"
    assert statuses["aborted"] + statuses["aborting"] >= 1, seen


async def test_domainjobs_worker_loses_nothing_under_the_same_conditions(
    redis_url: str, race_roots: str
) -> None:
    for _attempt in range(3):
        with redis_server() as url:
            statuses, runs = await _first_moments(url, redis_url, race_roots, plain=False, n=200)
        assert statuses == {"complete": 200}, summary(statuses, runs)
        assert runs == [1] * 200, summary(statuses, runs)
        redis.Redis.from_url(redis_url).flushall()


@pytest.mark.parametrize("queue_class", [RedisQueue, SweepSafeRedisQueue])
async def test_the_window_a_sweep_between_dequeue_and_start(
    redis_url: str, queue_class: type[RedisQueue]
) -> None:
    """The race step by step with SAQ's own calls: a worker's dequeue (BLMOVE), then a
    sweep before the worker marks the job active. SAQ's sweep aborts it; ours spares it."""
    queue = queue_class.from_url(redis_url, name="default")
    await queue.connect()
    try:
        await queue.enqueue("race.touch", key="taken")
        job = await queue.dequeue(timeout=1)  # Worker.process, step 1
        assert job is not None
        sweep = asyncio.create_task(queue.sweep(lock=1, abort=0.2))
        await asyncio.sleep(0.05)  # the sweep has read the active list
        job.started, job.attempts, job.worker_id = int(time.time() * 1000), 1, "live"
        await job.update(status="active")  # Worker.process, step 2
        await sweep
        stored = await queue.job("taken")
        assert stored is not None
        if queue_class is RedisQueue:  # swept from under a live worker: aborted or re-queued
            assert stored.status != "active", stored
            assert stored.error == "swept", stored
        else:
            assert stored.status == "active", stored
            assert await queue.count("active") == 1
    finally:
        await queue.disconnect()


def test_several_worker_processes_on_a_fresh_server_lose_nothing(
    fresh_redis_url: str, redis_url: str, make_app
) -> None:
    roots, app_dir = race_app(make_app)
    n = 600

    async def enqueue() -> list[str]:
        queue = queue_from_url(fresh_redis_url, "default")
        await queue.connect()
        try:
            return await enqueue_many(queue, "race.touch", n, work_ms=5)
        finally:
            await queue.disconnect()

    keys = asyncio.run(enqueue())
    workers = [
        start_cli_worker(fresh_redis_url, roots, app_dir, redis_url, "--burst") for _ in range(3)
    ]
    codes = [w.wait(90) for w in workers]
    assert codes == [0, 0, 0], [stderr_of(w) for w in workers]

    async def check() -> None:
        queue = queue_from_url(fresh_redis_url, "default")
        await queue.connect()
        try:
            statuses = await final_statuses(queue, keys)
        finally:
            await queue.disconnect()
        runs = run_counts(redis_url, keys)
        assert statuses == {"complete": n}, summary(statuses, runs)
        assert runs == [1] * n, summary(statuses, runs)

    asyncio.run(check())


# -- a soak: sweeps every 0.2 s while jobs flow ------------------------------------------


def test_soak_sweeps_while_jobs_flow_lose_and_duplicate_nothing(
    fresh_redis_url: str, redis_url: str, make_app
) -> None:
    roots, app_dir = race_app(make_app)
    soak_queue = fresh_redis_url
    period, duration = 0.2, 6.0  # 30 sweep periods
    workers = [
        start_script_worker(soak_queue, roots, app_dir, redis_url, sweep=period) for _ in range(3)
    ]

    async def produce() -> list[str]:
        queue = queue_from_url(soak_queue, "default")
        await queue.connect()
        keys: list[str] = []
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                keys += await enqueue_many(queue, "race.touch", 10, work_ms=20)
                await asyncio.sleep(0.02)
            return keys
        finally:
            await queue.disconnect()

    try:
        broker = redis.Redis.from_url(soak_queue)
        wait_for(lambda: broker.hlen("saq:default:leases") >= 3, timeout=30, what="workers up")
        broker.close()
        keys = asyncio.run(produce())
        wait_for(lambda: min(run_counts(redis_url, keys)) >= 1, timeout=60, what="every job to run")

        async def settled() -> dict:
            queue = queue_from_url(soak_queue, "default")
            await queue.connect()
            try:
                return dict(await final_statuses(queue, keys))
            finally:
                await queue.disconnect()

        wait_for(
            lambda: asyncio.run(settled()) == {"complete": len(keys)},
            timeout=30,
            interval=0.5,
            what="every job to be complete",
        )
    finally:
        codes = stop(workers)
    runs = run_counts(redis_url, keys)
    assert codes == [0, 0, 0]
    assert runs == [1] * len(keys), {"jobs": len(keys), "runs": sorted(set(runs))}
    sweeps = int(redis.Redis.from_url(redis_url).get("sweeps") or 0)
    assert sweeps >= duration / period / 3, f"only {sweeps} sweeps ran"
    assert len(keys) >= 500


# -- dead workers' jobs run again within the documented time ----------------------------


def test_sigkilled_workers_job_runs_again_within_the_documented_time(
    fresh_redis_url: str, redis_url: str, make_app
) -> None:
    roots, app_dir = race_app(make_app)
    url = fresh_redis_url
    first = start_cli_worker(url, roots, app_dir, redis_url)
    second = None
    try:

        async def enqueue() -> str:
            queue = queue_from_url(url, "default")
            await queue.connect()
            try:
                # a long timeout: recovery must not wait for it (plain SAQ would)
                job = await queue.enqueue("race.hang", seconds=120, timeout=600)
                return job.key
            finally:
                await queue.disconnect()

        key = asyncio.run(enqueue())
        wait_for(lambda: run_counts(redis_url, [key]) == [1], timeout=30, what="first run")
        second = start_cli_worker(url, roots, app_dir, redis_url)
        client = redis.Redis.from_url(url)
        wait_for(
            lambda: client.hlen("saq:default:leases") >= 2, timeout=30, what="second worker up"
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed = time.monotonic()
        wait_for(
            lambda: run_counts(redis_url, [key]) == [2],
            timeout=RECOVERY_BOUND + 30,
            what="the job to run again",
        )
        elapsed = time.monotonic() - killed
        print(f"re-run {elapsed:.1f}s after SIGKILL (bound {RECOVERY_BOUND}s)")
        assert elapsed <= RECOVERY_BOUND + SLACK, f"re-run after {elapsed:.1f}s"

        wait_for(
            lambda: json.loads(client.get(f"saq:job:default:{key}"))["status"] == "complete",
            timeout=10,
            what="completion",
        )
        stored = json.loads(client.get(f"saq:job:default:{key}"))
        assert stored["meta"][LOST_COUNT_KEY] == 1
        client.close()
    finally:
        stop([p for p in (first, second) if p is not None])
    assert run_counts(redis_url, [key]) == [2]


async def test_job_taken_by_a_worker_that_died_before_starting_it_runs(
    redis_url: str, race_roots: str
) -> None:
    """A job moved to the active list by a worker that died before marking it active
    (the very window of the race) is put back once it has sat there ``settle`` seconds."""
    queue = queue_from_url(redis_url, "default", settle=1.0)
    assert isinstance(queue, SweepSafeRedisQueue)
    await queue.connect()
    try:
        job = await queue.enqueue("race.touch")
        await queue.redis.lmove("saq:default:queued", "saq:default:active", "LEFT", "RIGHT")
        taken = time.monotonic()
        worker = build_worker(discover(race_roots), queue=queue, timers={"sweep": 0.2})
        task = asyncio.create_task(worker.start())
        try:
            while (await queue.job(job.key)).status != "complete":  # type: ignore[union-attr]
                assert time.monotonic() - taken < 1.0 + 2 * 0.2 + SLACK
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
            task.cancel()
        assert time.monotonic() - taken >= 1.0  # spared while it might be starting
    finally:
        await queue.disconnect()
    assert run_counts(redis_url, [job.key]) == [1]


async def test_a_job_that_keeps_killing_its_worker_is_given_up(redis_url: str) -> None:
    """Lost ``max_lost`` times, a job ends ``aborted`` with a clear error (no crash loop)."""
    queue = queue_from_url(redis_url, "default", max_lost=2, lost_after=0.3)
    assert isinstance(queue, SweepSafeRedisQueue)
    await queue.connect()
    try:
        job = await queue.enqueue("crasher")
        for attempt in (1, 2):
            # play a worker that takes the job, marks it active, holds a lease, and dies
            await queue.dequeue(timeout=1)
            stored = await queue.job(job.key)
            assert stored is not None
            stored.worker_id = f"doomed-{attempt}"
            stored.started = stored.touched = int(time.time() * 1000)
            await stored.update(status="active")
            await queue.release_leases()  # the process is gone: its lease lapses
            await asyncio.sleep(0.01)
            await queue.redis.delete("saq:default:sweep")
            await queue.sweep(lock=1)
            stored = await queue.job(job.key)
            assert stored is not None
            if attempt == 1:
                assert stored.status == "queued", stored
                assert stored.meta[LOST_COUNT_KEY] == 1
        assert stored.status == "aborted"
        assert "died 2 times" in (stored.error or "")
        assert await queue.count("active") == 0
    finally:
        await queue.disconnect()


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def fresh_pg_url(postgres_url: str) -> Iterator[str]:
    """A brand-new database on the session's PostgreSQL cluster."""
    name = f"dj_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextlib.asynccontextmanager
async def _pg_queue(url: str) -> AsyncIterator[Any]:
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        yield queue
    finally:
        await queue.disconnect()


def test_postgres_several_worker_processes_on_a_fresh_database_lose_nothing(
    fresh_pg_url: str, redis_url: str, make_app
) -> None:
    roots, app_dir = race_app(make_app)
    n = 300

    async def enqueue() -> list[str]:
        async with _pg_queue(fresh_pg_url) as queue:
            return await enqueue_many(queue, "race.touch", n, work_ms=5)

    keys = asyncio.run(enqueue())
    workers = [
        start_cli_worker(fresh_pg_url, roots, app_dir, redis_url, "--burst") for _ in range(3)
    ]
    codes = [w.wait(120) for w in workers]
    assert codes == [0, 0, 0], [stderr_of(w) for w in workers]

    async def check() -> None:
        async with _pg_queue(fresh_pg_url) as queue:
            statuses = await final_statuses(queue, keys)
            runs = run_counts(redis_url, keys)
            assert statuses == {"complete": n}, summary(statuses, runs)
            assert runs == [1] * n, summary(statuses, runs)

    asyncio.run(check())


def test_postgres_sigkilled_workers_job_runs_again_within_the_documented_time(
    fresh_pg_url: str, redis_url: str, make_app
) -> None:
    roots, app_dir = race_app(make_app)
    first = start_cli_worker(fresh_pg_url, roots, app_dir, redis_url)
    second = None

    async def enqueue() -> str:
        async with _pg_queue(fresh_pg_url) as queue:
            job: Job = await queue.enqueue("race.hang", seconds=120, timeout=600)
            return job.key

    async def status(key: str) -> str:
        async with _pg_queue(fresh_pg_url) as queue:
            job = await queue.job(key)
            return job.status.value if job else "missing"

    try:
        key = asyncio.run(enqueue())
        wait_for(lambda: run_counts(redis_url, [key]) == [1], timeout=30, what="first run")
        second = start_cli_worker(fresh_pg_url, roots, app_dir, redis_url)
        with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM domainjobs_leases "
                        "WHERE expire_at > EXTRACT(EPOCH FROM NOW())"
                    ).fetchone()[0]
                    >= 3
                ),  # first's dequeuer + worker, second's worker
                timeout=30,
                what="second worker up",
            )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed = time.monotonic()
        wait_for(
            lambda: run_counts(redis_url, [key]) == [2],
            timeout=RECOVERY_BOUND + 30,
            what="the job to run again",
        )
        elapsed = time.monotonic() - killed
        print(f"re-run {elapsed:.1f}s after SIGKILL (bound {RECOVERY_BOUND}s)")
        assert elapsed <= RECOVERY_BOUND + SLACK, f"re-run after {elapsed:.1f}s"
        wait_for(lambda: asyncio.run(status(key)) == "complete", timeout=10, what="completion")
    finally:
        stop([p for p in (first, second) if p is not None])
    assert run_counts(redis_url, [key]) == [2]


async def test_a_stuck_job_of_a_live_worker_is_handled_as_saq_does(
    redis_url: str, race_roots: str
) -> None:
    """Past its heartbeat, a job is aborted, stopped by its (live) worker, and retried."""
    queue = queue_from_url(redis_url, "default")
    await queue.connect()
    worker = build_worker(discover(race_roots), queue=queue, timers={"sweep": 0.2})
    task = asyncio.create_task(worker.start())
    try:
        job = await queue.enqueue("race.hang", seconds=60, heartbeat=1, retries=2, timeout=600)
        assert job is not None
        deadline = time.monotonic() + 20
        while (stored := await queue.job(job.key)) is None or stored.status != "complete":
            assert time.monotonic() < deadline, stored
            await asyncio.sleep(0.05)
        assert stored.attempts == 2
        assert LOST_COUNT_KEY not in stored.meta  # its worker was alive: not a lost job
    finally:
        await worker.stop()
        task.cancel()
        await queue.disconnect()
    assert run_counts(redis_url, [job.key]) == [2]
