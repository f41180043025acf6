"""The Jobs facade on domainjobs' PostgreSQL queue, against a real throwaway cluster:
waiting on the finished-job ``NOTIFY`` (``LISTEN saq:job:<queue>``), with a re-read as the
safety net for a worker that sends none (plain SAQ) and for a dropped listener."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid

import pytest

pytest.importorskip("psycopg")

import psycopg
from saq.job import Status
from saq.queue.postgres import PostgresQueue

from domainjobs import JobFailedError, Jobs, TaskArgumentsError, discover
from domainjobs.brokers.pgnotify import MAX_CHANNEL_BYTES, job_channel
from domainjobs.client.waiting import PostgresCompletionListener
from domainjobs.lifespan import in_process_workers

TASKS = """
from domainjobs import task

@task(queue="QUEUE", retries=1)
async def double(ctx, n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    return 2 * n

@task(queue="QUEUE")
async def slow(ctx, n: int) -> int:
    import asyncio
    await asyncio.sleep(0.3)
    return n
"""


@pytest.fixture
def pg_app(make_app):
    queue = f"pg_{uuid.uuid4().hex[:8]}"  # the cluster is shared by the session
    base = make_app({"app/domain/math/jobs/tasks.py": TASKS.replace("QUEUE", queue)})
    registry = discover(f"{base.name}.domain")
    return registry, importlib.import_module(f"{base.name}.domain.math.jobs.tasks"), queue


async def test_enqueue_apply_map_and_keys_on_postgres(pg_app, postgres_url):
    registry, tasks, queue = pg_app
    async with (
        Jobs(registry, url=postgres_url) as jobs,
        in_process_workers(registry, url=postgres_url),
    ):
        started = time.monotonic()
        assert await jobs.with_options(wait_timeout=30).apply(tasks.double, n=21) == 42
        assert time.monotonic() - started < 10
        assert await jobs.map(tasks.double, [{"n": i} for i in range(5)]) == [0, 2, 4, 6, 8]
        with pytest.raises(JobFailedError, match="negative"):
            await jobs.apply(tasks.double, n=-1)
        with pytest.raises(TaskArgumentsError):
            await jobs.enqueue(tasks.double, m=1)
        view = jobs.with_options(key="same", delay=3600)
        first = await view.enqueue(tasks.double, n=1)
        second = await view.enqueue(tasks.double, n=2)
        assert first.created and not second.created and second.job.kwargs == {"n": 1}
        (status,) = await jobs.status([queue])
        assert status.scheduled == 1 and status.failed == 1


async def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_finished_job_is_notified_on_its_queue_channel(pg_app, postgres_url):
    registry, tasks, queue = pg_app
    listener = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    try:
        await listener.execute(f'LISTEN "{job_channel(queue)}"')
        async with (
            Jobs(registry, url=postgres_url) as jobs,
            in_process_workers(registry, url=postgres_url),
        ):
            handle = await jobs.enqueue(tasks.double, n=4)
            assert await handle.result(timeout=30) == 8
            payloads = [n.payload async for n in listener.notifies(timeout=10, stop_after=1)]
        assert payloads == [f"complete:{handle.job.key}"]
    finally:
        await listener.close()


async def test_apply_is_woken_by_the_notification_not_by_a_re_read(
    pg_app, postgres_url, monkeypatch
):
    registry, tasks, _queue = pg_app
    # the safety re-read would come after a minute: only the NOTIFY can end these waits early
    monkeypatch.setattr(PostgresCompletionListener, "recheck_start", 60.0)
    async with (
        Jobs(registry, url=postgres_url) as jobs,
        in_process_workers(registry, url=postgres_url),
    ):
        started = time.monotonic()
        assert await jobs.apply(tasks.slow, n=3) == 3
        assert await jobs.map(tasks.slow, [{"n": i} for i in range(4)]) == [0, 1, 2, 3]
        assert time.monotonic() - started < 30


async def test_a_job_finished_by_plain_saq_is_found_by_the_re_read(pg_app, postgres_url):
    registry, tasks, queue = pg_app
    plain = PostgresQueue.from_url(postgres_url, name=queue)  # sends no finished-job NOTIFY
    await plain.connect()
    try:
        async with Jobs(registry, url=postgres_url) as jobs:
            handle = await jobs.enqueue(tasks.double, n=5)
            waiter = asyncio.create_task(jobs.wait_for(handle.job, timeout=60))
            listeners = jobs._state.listeners
            await _until(
                lambda: queue in listeners and handle.job.key in listeners[queue]._waiters,
                "the waiter",
            )
            job = await plain.job(handle.job.key)
            assert job is not None
            await plain.finish(job, Status.COMPLETE, result=10)
            finished = await waiter
        assert finished.status == Status.COMPLETE and finished.result == 10
    finally:
        await plain.disconnect()


async def test_a_dropped_listen_connection_is_replaced(pg_app, postgres_url):
    registry, tasks, queue = pg_app
    async with (
        Jobs(registry, url=postgres_url) as jobs,
        in_process_workers(registry, url=postgres_url),
    ):
        assert await jobs.apply(tasks.double, n=1) == 2
        listener = jobs._state.listeners[queue]
        pid = listener._connection.info.backend_pid
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await _until(lambda: not listener.running, "the listener to notice")
        assert await jobs.with_options(wait_timeout=60).apply(tasks.double, n=2) == 4
        assert listener.running and listener._connection.info.backend_pid != pid


def test_job_channels_fit_postgres_limit() -> None:
    assert job_channel("default") == "saq:job:default"
    long = job_channel("é" * 100)
    assert len(long.encode()) <= MAX_CHANNEL_BYTES
    assert long.startswith("saq:job:é") and "\ufffd" not in long


async def test_aborting_a_queued_job_notifies_its_waiter(pg_app, postgres_url, monkeypatch):
    registry, tasks, queue = pg_app
    monkeypatch.setattr(PostgresCompletionListener, "recheck_start", 60.0)  # NOTIFY or nothing
    async with Jobs(registry, url=postgres_url) as jobs:
        handle = await jobs.with_options(delay=3600).enqueue(tasks.double, n=1)
        waiter = asyncio.create_task(jobs.wait_for(handle.job, timeout=120))
        listeners = jobs._state.listeners
        await _until(
            lambda: queue in listeners and handle.job.key in listeners[queue]._waiters,
            "the waiter",
        )
        started = time.monotonic()
        await handle.abort("not needed")
        finished = await waiter
        assert finished.status == Status.ABORTED
        assert time.monotonic() - started < 30
