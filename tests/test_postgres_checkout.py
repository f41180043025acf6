"""The pool of domainjobs' PostgreSQL queue checks a connection it hands out with a round trip
only when the connection may be broken (``domainjobs.brokers.pgcheck``).

A real cluster of its own for the module, with ``log_statement = all`` and the session's
``application_name`` in front of every log line: the server's own log says which
statements each queue sent. The restart is a real ``pg_ctl`` stop and start.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("psycopg")

import psycopg
from psycopg_pool import AsyncConnectionPool
from saq.job import Status
from saq.queue.postgres import PostgresQueue

from domainjobs import Jobs, discover
from domainjobs.brokers.pgcheck import CheckoutCheck, only_notifications, socket_readable
from domainjobs.brokers.pgnotify import NotifyingPostgresQueue
from domainjobs.brokers.urls import queue_from_url
from domainjobs.lifespan import in_process_workers
from tests.fault_helpers import RestartablePostgres
from tests.servers import wait_for

TASKS = """
from domainjobs import task

@task(retries=1)
async def double(ctx, n: int) -> int:
    return 2 * n
"""

ENTRY = re.compile(r"^([\w-]*)\|LOG:  (?:statement|execute [^:]*): (.*)$")
OTHER_ENTRY = re.compile(r"^[\w-]*\|")


class StatementLog:
    """The statements the server logged since ``mark``, by ``application_name``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def read(self, app: str) -> list[str]:
        text = self.path.read_bytes()[self.offset :].decode(errors="replace")
        entries: list[tuple[str, str]] = []
        open_entry = False
        for line in text.splitlines():
            match = ENTRY.match(line)
            if match:
                entries.append((match.group(1), match.group(2)))
                open_entry = True
            elif OTHER_ENTRY.match(line):
                open_entry = False
            elif open_entry:  # a statement on several lines
                name, sql = entries[-1]
                entries[-1] = (name, f"{sql} {line.strip()}")
        return [" ".join(sql.split()) for name, sql in entries if name == app]


def empty(statements: list[str]) -> int:
    """The empty queries among ``statements``: psycopg's connection check."""
    return sum(1 for sql in statements if not sql)


def inserts(statements: list[str]) -> int:
    return sum(1 for sql in statements if sql.startswith('INSERT INTO "saq_jobs"'))


@pytest.fixture(scope="module")
def pg() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres()
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            conn.execute("ALTER SYSTEM SET log_line_prefix = '%a|'")
            conn.execute("SELECT pg_reload_conf()")

        def reloaded() -> bool:
            with psycopg.connect(server.url, autocommit=True) as conn:
                row = conn.execute("SHOW log_line_prefix").fetchone()
            return row is not None and row[0] == "%a|"

        wait_for(reloaded, timeout=30, what="the new log settings")
        yield server
    finally:
        server.remove()


@pytest.fixture
def log(pg: RestartablePostgres) -> StatementLog:
    return StatementLog(pg.workdir / "log")


def named(url: str, app: str) -> str:
    return f"{url}?application_name={app}"


async def test_a_connection_in_use_is_handed_out_without_a_round_trip(
    pg: RestartablePostgres, log: StatementLog
) -> None:
    """50 enqueues: 50 INSERTs and no empty query from our queue; SAQ's check (asked for
    with ``check_idle_after=0``, or in a pool the user passes in) sends one per enqueue."""
    own_pool: AsyncConnectionPool = AsyncConnectionPool(
        named(pg.url, "given"), check=AsyncConnectionPool.check_connection, open=False
    )
    queues = {
        "ours": queue_from_url(named(pg.url, "ours"), "default"),
        "always": queue_from_url(named(pg.url, "always"), "default", check_idle_after=0),
        "given": NotifyingPostgresQueue(own_pool, name="default", manage_pool_lifecycle=True),
        "saq": PostgresQueue.from_url(named(pg.url, "saq"), name="default"),
    }
    assert queues["given"].pool is own_pool  # a pool passed in is used as it is
    assert isinstance(queues["ours"].pool._check, CheckoutCheck)
    counts = {}
    for app, queue in queues.items():
        await queue.connect()
        try:
            for _ in range(10):  # every connection of the pool handed out once
                await queue.enqueue("nothing.here")
            log.mark()
            for _ in range(50):
                await queue.enqueue("nothing.here")
            statements = log.read(app)
        finally:
            await queue.disconnect()
        counts[app] = (inserts(statements), empty(statements))
    assert counts == {"ours": (50, 0), "always": (50, 50), "given": (50, 50), "saq": (50, 50)}


async def test_a_connection_idle_past_the_bound_is_checked_with_a_round_trip(
    pg: RestartablePostgres, log: StatementLog
) -> None:
    queue = queue_from_url(
        named(pg.url, "idle"), "default", check_idle_after=2.0, min_size=1, max_size=1
    )
    await queue.connect()
    try:
        for _ in range(10):  # every connection of the pool handed out once
            await queue.enqueue("nothing.here")
        log.mark()
        for _ in range(20):
            await queue.enqueue("nothing.here")
        hot = log.read("idle")
        await asyncio.sleep(3.0)  # the idle time under test, not a synchronisation
        log.mark()
        await queue.enqueue("nothing.here")
        rested = log.read("idle")
    finally:
        await queue.disconnect()
    assert (inserts(hot), empty(hot)) == (20, 0)
    assert (inserts(rested), empty(rested)) == (1, 1)


@pytest.mark.timeout(180)  # a real restart on a loaded box
async def test_after_a_restart_the_next_enqueue_and_the_next_job_succeed(
    pg: RestartablePostgres,
    make_app: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every pooled connection of the client and of the worker is ended by the restart;
    once the server is back, the next ``Jobs.enqueue`` and the job it sends run as if
    nothing happened: no error for the caller, one attempt, and no statement of ours that
    ran into a dead session (while the server is down, the worker's polls fail, as they
    must)."""
    base = make_app({"app/domain/math/jobs/tasks.py": TASKS})
    registry = discover(f"{base.name}.domain")
    tasks = importlib.import_module(f"{base.name}.domain.math.jobs.tasks")
    caplog.set_level(logging.WARNING)
    async with (
        Jobs(registry, url=pg.url) as jobs,
        in_process_workers(registry, url=pg.url, concurrency=10),
    ):
        assert await jobs.with_options(wait_timeout=60).apply(tasks.double, n=1) == 2
        assert await jobs.map(tasks.double, [{"n": i} for i in range(30)]) == [
            2 * i for i in range(30)
        ]
        bystander = await psycopg.AsyncConnection.connect(pg.url, autocommit=True)
        await asyncio.to_thread(pg.restart)
        caplog.clear()  # what failed while the server was down is not the question
        with pytest.raises(psycopg.OperationalError):  # what an unchecked connection meets
            await bystander.execute("SELECT 1")
        await bystander.close()
        started = time.monotonic()
        handle = await jobs.enqueue(tasks.double, n=21)
        job = await jobs.wait_for(handle.job, timeout=60)
        took = time.monotonic() - started
    assert (job.status, job.result, job.attempts, job.error) == (Status.COMPLETE, 42, 1, None)
    assert took < 30, took  # not the pool's growing back-off over stale connections
    ours = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.name.split(".")[0] in ("saq", "domainjobs")
        # the client's LISTEN connection was in use when the server went: it listens again
        and not record.getMessage().startswith("lost the job notifications")
    ]
    assert ours == []


async def _readable(conn: psycopg.AsyncConnection) -> None:
    deadline = time.monotonic() + 30
    while not socket_readable(conn):
        assert time.monotonic() < deadline, "nothing arrived on the connection"
        await asyncio.sleep(0.01)


async def test_notifications_waiting_need_no_round_trip_an_ended_session_does(
    pg: RestartablePostgres, log: StatementLog
) -> None:
    """What waits on an idle connection decides: notifications (a connection that ran
    ``LISTEN``) are left for the next statement; the error of a terminated session, after
    them or alone, gets psycopg's check, which fails."""
    url = named(pg.url, "peek")
    check = CheckoutCheck(idle_after=600)
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as listening,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as quiet,
        await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as admin,
    ):
        await listening.execute("LISTEN peek_test")
        for conn in (listening, quiet):
            await check(conn)  # first checkout: the round trip, as for any new connection
        log.mark()
        for n in range(3):
            await admin.execute(f"NOTIFY peek_test, 'n{n}'")
        await _readable(listening)
        assert only_notifications(listening)
        await check(listening)
        await check(quiet)
        assert (check.full_checks, check.skipped) == (2, 2)
        assert empty(log.read("peek")) == 0
        assert (await (await listening.execute("SELECT 1")).fetchone()) == (1,)

        for n in range(2):
            await admin.execute(f"NOTIFY peek_test, 'm{n}'")
        await _readable(listening)
        await admin.execute("SELECT pg_terminate_backend(%s)", [listening.info.backend_pid])
        await admin.execute("SELECT pg_terminate_backend(%s)", [quiet.info.backend_pid])
        await _readable(quiet)
        deadline = time.monotonic() + 30
        while only_notifications(listening):  # the error follows the notifications
            assert time.monotonic() < deadline, "the session's end never arrived"
            await asyncio.sleep(0.01)
        for conn in (listening, quiet):
            assert not only_notifications(conn)
            with pytest.raises(psycopg.OperationalError):
                await check(conn)
        assert check.full_checks == 4
