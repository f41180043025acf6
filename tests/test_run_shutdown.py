"""Graceful shutdown of ``domainjobs run`` with real processes and real signals: nothing
running is lost, the grace period is kept, a second signal stops at once."""

from __future__ import annotations

import signal

import redis

from tests.runapps import Running, enqueue, job_statuses, work_app
from tests.servers import wait_for


def test_sigterm_during_a_busy_run_loses_nothing(make_app, redis_url):
    app = work_app(make_app)
    prefix = app.name
    keys = enqueue(redis_url, "work.sleepy", 40, timeout=30)
    client = redis.Redis.from_url(redis_url)
    with Running(["--concurrency", "5", "--grace", "20"], app, redis_url) as run:
        wait_for(lambda: client.llen(f"{prefix}:done") >= 5, what="some jobs done")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    started = client.llen(f"{prefix}:started")
    done = client.llen(f"{prefix}:done")
    assert started == done, "a job that started was cut off instead of finishing"
    assert 5 <= done < 40, f"{done} jobs done: the stop came too late to prove anything"
    assert client.llen(f"{prefix}:shutdown") == 1
    statuses = job_statuses(redis_url, keys)
    assert set(statuses.values()) <= {"complete", "queued"}, statuses
    assert list(statuses.values()).count("complete") == done
    # what was not taken is still queued: a second run drains it, each job exactly once
    with Running(["--burst", "--concurrency", "10"], app, redis_url) as run:
        assert run.wait() == 0, run.log
    done_ids = [int(x) for x in client.lrange(f"{prefix}:done", 0, -1)]
    assert sorted(done_ids) == list(range(40))
    assert set(job_statuses(redis_url, keys).values()) == {"complete"}


def test_jobs_still_running_after_the_grace_period_are_requeued(make_app, redis_url):
    app = work_app(make_app)
    prefix = app.name
    [key] = enqueue(redis_url, "work.sleepy", 1, seconds=60, timeout=120, retries=1)
    client = redis.Redis.from_url(redis_url)
    with Running(["--grace", "1"], app, redis_url) as run:
        wait_for(lambda: client.llen(f"{prefix}:started") == 1, what="the job started")
        run.signal(signal.SIGTERM)
        assert run.wait(timeout=15) == 0, run.log
    assert "grace period of 1s is over" in run.log
    assert client.llen(f"{prefix}:done") == 0
    assert client.llen(f"{prefix}:shutdown") == 1, "shutdown hooks must run"
    assert job_statuses(redis_url, [key]) == {key: "queued"}, run.log


def test_a_second_signal_stops_at_once_and_still_requeues(make_app, redis_url):
    app = work_app(make_app)
    prefix = app.name
    [key] = enqueue(redis_url, "work.sleepy", 1, seconds=60, timeout=120)
    client = redis.Redis.from_url(redis_url)
    with Running(["--grace", "120"], app, redis_url) as run:
        wait_for(lambda: client.llen(f"{prefix}:started") == 1, what="the job started")
        run.signal(signal.SIGINT)
        run.wait_log("finishing running jobs")
        run.signal(signal.SIGTERM)
        assert run.wait(timeout=15) == 0, run.log
    assert "cancelling running jobs now" in run.log
    assert job_statuses(redis_url, [key]) == {key: "queued"}
    assert client.llen(f"{prefix}:shutdown") == 1


async def test_run_workers_stops_gracefully_when_its_stop_event_is_set(redis_url):
    """The in-process API: ``stop`` ends the workers like a first signal, with the grace
    period enforced (a job longer than it is re-queued, not lost)."""
    import asyncio

    from saq import Queue

    from domainjobs import DomainWorker
    from domainjobs.runtime.runner import run_workers

    started = asyncio.Event()

    async def slow(ctx):
        started.set()
        await asyncio.sleep(60)

    queue = Queue.from_url(redis_url, name="inproc")
    worker = DomainWorker(queue, [("slow", slow)], concurrency=2)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_workers([worker], handle_signals=False, grace=0.5, stop=stop))
    check = Queue.from_url(redis_url, name="inproc")
    await check.connect()
    job = await check.enqueue("slow", timeout=120)
    await asyncio.wait_for(started.wait(), 15)
    stop.set()
    assert await asyncio.wait_for(runner, 15) == 0
    await job.refresh()
    assert job.status.value == "queued"
    await check.disconnect()
