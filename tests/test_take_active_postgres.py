"""Take + mark active in one transaction on PostgreSQL (``SweepSafePostgresQueue.take_active``):
what it stores stays SAQ's job format, read back by plain SAQ (``Queue.job``, a plain
``saq.Worker``), with SAQ's ``saq:dequeue`` notification; a lapsed lease takes nothing and
fences the worker's later writes.

Everything is real: a PostgreSQL cluster per session (a fresh database per test), plain SAQ
queues and workers beside ours.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier
from saq import Worker
from saq.job import Status
from saq.queue.postgres import PostgresQueue

from domainjobs.brokers.leases import FENCE
from domainjobs.brokers.pgnotify import NotifyingPostgresQueue
from domainjobs.brokers.postgres import SweepSafePostgresQueue
from domainjobs.errors import LeaseLostError

AWKWARD: dict[str, Any] = {
    "big": 2**70 + 1,
    "tenth": 0.1 + 0.2,
    "empty_list": [],
    "text": 'é "quoted" / back\\slash \n newline \u2603',
    "nested": {"xs": [1, 2.5, None, True]},
}

WORKER = "w-take-pg-1"


@pytest.fixture
def fresh_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the session's PostgreSQL cluster."""
    name = f"dj_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def queues(fresh_url: str) -> AsyncIterator[tuple[SweepSafePostgresQueue, PostgresQueue]]:
    ours = SweepSafePostgresQueue.from_url(fresh_url, name="default")
    plain = PostgresQueue.from_url(fresh_url, name="default")
    await ours.connect()
    await plain.connect()
    try:
        yield ours, plain
    finally:
        await ours.disconnect()
        await plain.disconnect()


async def lapse(queue: SweepSafePostgresQueue, worker_id: str) -> None:
    """Expire ``worker_id``'s lease in the database's clock."""
    async with queue.pool.connection() as conn:
        await conn.execute(
            SQL("UPDATE {} SET expire_at = 0 WHERE worker_id = %s").format(queue.leases_table),
            [worker_id],
        )


async def test_a_job_taken_in_one_transaction_is_read_back_by_plain_saq(
    queues: tuple[SweepSafePostgresQueue, PostgresQueue], fresh_url: str
) -> None:
    ours, plain = queues
    enqueued = await plain.enqueue("work", **AWKWARD)
    assert enqueued is not None
    listener = await psycopg.AsyncConnection.connect(fresh_url, autocommit=True)
    payloads: list[str] = []
    listener.add_notify_handler(lambda note: payloads.append(note.payload))
    await listener.execute(SQL("LISTEN {}").format(Identifier(ours._channel)))
    await ours.hold_lease(WORKER)

    job, marked = await ours.take_active(WORKER)

    assert marked and job is not None and job.key == enqueued.key
    assert (job.status, job.attempts, job.worker_id) == (Status.ACTIVE, 1, WORKER)
    assert job.kwargs == AWKWARD
    deadline = time.monotonic() + 10
    while "saq:dequeue" not in payloads and time.monotonic() < deadline:
        await listener.execute("SELECT 1")  # a round trip delivers what has arrived
        await asyncio.sleep(0.02)
    await listener.close()
    assert "saq:dequeue" in payloads

    seen = await plain.job(enqueued.key)
    assert seen is not None
    assert (seen.status, seen.attempts, seen.worker_id) == (Status.ACTIVE, 1, WORKER)
    assert seen.started == job.started and seen.started >= enqueued.queued
    assert seen.kwargs == AWKWARD

    token = FENCE.set(WORKER)  # the fenced finish, as the worker writes it
    try:
        await job.finish(Status.COMPLETE, result={"big": 2**65})
    finally:
        FENCE.reset(token)
    done = await plain.job(enqueued.key)
    assert done is not None and done.status == Status.COMPLETE
    assert done.result == {"big": 2**65} and done.kwargs == AWKWARD


async def test_a_plain_saq_worker_runs_a_job_ours_took_and_put_back(
    queues: tuple[SweepSafePostgresQueue, PostgresQueue],
) -> None:
    ours, plain = queues
    enqueued = await plain.enqueue("work", **AWKWARD)
    assert enqueued is not None
    await ours.hold_lease(WORKER)
    job, marked = await ours.take_active(WORKER)
    assert marked and job is not None
    async with ours.pool.connection() as conn:  # put back as a sweep would, bytes untouched
        await conn.execute(
            SQL("UPDATE {} SET status = 'queued' WHERE key = %s").format(ours.jobs_table),
            [job.key],
        )
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
    queues: tuple[SweepSafePostgresQueue, PostgresQueue],
) -> None:
    ours, plain = queues
    enqueued = await plain.enqueue("work", n=1)
    assert enqueued is not None
    await ours.hold_lease(WORKER)
    await lapse(ours, WORKER)

    with pytest.raises(LeaseLostError):
        await ours.take_active(WORKER)

    stored = await plain.job(enqueued.key)
    assert stored is not None and stored.status == Status.QUEUED and stored.attempts == 0
    with pytest.raises(LeaseLostError):  # refused here too from now on, without a trip
        await ours.take_active(WORKER)


async def test_a_write_after_the_lease_lapsed_is_refused(
    queues: tuple[SweepSafePostgresQueue, PostgresQueue],
) -> None:
    ours, plain = queues
    enqueued = await plain.enqueue("work", n=3)
    assert enqueued is not None
    await ours.hold_lease(WORKER)
    job, marked = await ours.take_active(WORKER)
    assert marked and job is not None
    await lapse(ours, WORKER)

    token = FENCE.set(WORKER)
    try:
        with pytest.raises(LeaseLostError):
            await job.finish(Status.COMPLETE, result="late")
    finally:
        FENCE.reset(token)
    stored = await plain.job(enqueued.key)
    assert stored is not None and stored.status == Status.ACTIVE and stored.result is None


async def test_an_empty_queue_waits_then_takes_the_job(
    queues: tuple[SweepSafePostgresQueue, PostgresQueue],
) -> None:
    ours, plain = queues
    await ours.hold_lease(WORKER)
    job, marked = await ours.take_active(WORKER, timeout=0.2)
    assert (job, marked) == (None, False)
    waiting = asyncio.create_task(ours.take_active(WORKER, timeout=20))
    enqueued = await plain.enqueue("work", n=2)
    assert enqueued is not None
    job, marked = await asyncio.wait_for(waiting, 30)
    assert job is not None and job.kwargs == {"n": 2}
    if marked:  # the usual case: the take marked it under the lease
        stored = await plain.job(job.key)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.worker_id) == (Status.ACTIVE, 1, WORKER)
    # else SAQ's own dequeue took it (a wake-up raced the waiter), and the worker marks it
    # itself, as documented for ``take_active``


async def test_two_leases_waiting_fall_back_to_the_worker_marking_the_job(
    queues: tuple[SweepSafePostgresQueue, PostgresQueue],
) -> None:
    ours, plain = queues
    await ours.hold_lease(WORKER)
    await ours.hold_lease("w-take-pg-2")
    first = asyncio.create_task(ours.take_active(WORKER, timeout=20))
    second = asyncio.create_task(ours.take_active("w-take-pg-2", timeout=20))
    await asyncio.sleep(0)  # both wait before the job arrives (or one takes it: either way)
    assert await plain.enqueue("work", n=4) is not None
    done, pending = await asyncio.wait([first, second], timeout=30, return_when="FIRST_COMPLETED")
    job, marked = next(iter(done)).result()
    for task in pending:
        task.cancel()
    assert job is not None and job.kwargs == {"n": 4}
    stored = await plain.job(job.key)
    assert stored is not None and stored.status == Status.ACTIVE
    if not marked:  # taken for two leases: the queue's own lease holds it until a worker marks
        assert stored.worker_id == ours.dequeuer_id and stored.attempts == 0


async def test_a_fenced_finish_writes_and_notifies_in_one_statement_or_neither(
    fresh_url: str,
) -> None:
    ours = NotifyingPostgresQueue.from_url(fresh_url, name="default")
    await ours.connect()
    listener = await psycopg.AsyncConnection.connect(fresh_url, autocommit=True)
    try:
        payloads: list[str] = []
        listener.add_notify_handler(lambda note: payloads.append(note.payload))
        await listener.execute(SQL("LISTEN {}").format(Identifier(ours.job_channel)))
        await ours.hold_lease(WORKER)
        first = await ours.enqueue("work", n=5)
        second = await ours.enqueue("work", n=6)
        assert first is not None and second is not None
        taken = [await ours.take_active(WORKER) for _ in range(2)]
        assert all(marked for _, marked in taken)
        one, two = (job for job, _ in taken)
        assert one is not None and two is not None

        token = FENCE.set(WORKER)
        try:
            await one.finish(Status.COMPLETE, result=1)
            await lapse(ours, WORKER)
            with pytest.raises(LeaseLostError):
                await two.finish(Status.COMPLETE, result=2)
        finally:
            FENCE.reset(token)

        deadline = time.monotonic() + 10
        while not payloads and time.monotonic() < deadline:
            await listener.execute("SELECT 1")
            await asyncio.sleep(0.02)
        await listener.execute("SELECT pg_sleep(0.2)")  # time for a wrong second one
        assert payloads == [f"complete:{one.key}"]
        done = await ours.job(one.key)
        assert done is not None and done.status == Status.COMPLETE and done.result == 1
        refused = await ours.job(two.key)
        assert refused is not None and refused.status == Status.ACTIVE
    finally:
        await listener.close()
        await ours.disconnect()
