"""The connection check of the PostgreSQL pool domainjobs builds: a round trip only when needed.

SAQ's ``PostgresQueue`` builds its psycopg pool with
``check=AsyncConnectionPool.check_connection``: every connection the pool hands out first
sends an empty query and waits for the answer, so that a connection the server dropped
(a restart, a crash, ``pg_terminate_backend``) is replaced before the real statement runs
on it. On a busy queue that is one extra round trip per statement.

``CheckoutCheck`` keeps the protection and drops the round trip for a connection in use:

- **The socket says so.** When the server ends a session (shutdown, crash, a terminated
  backend, an idle-session timeout) it sends a final error and closes the socket, so the
  socket of a connection resting in the pool turns readable. ``CheckoutCheck`` polls it
  without waiting (one system call). Nothing to read: the connection is handed out. Else
  it peeks at what waits there, without taking it: only notifications, notices or
  parameter changes (a connection that ran ``LISTEN`` before: SAQ's listener puts its
  connection back in the pool still listening, and every ``NOTIFY`` on the queue's
  channel reaches it) are left for the next statement to read, as psycopg does anyway;
  anything else (an error, the end of the stream, a TLS record it cannot read) gets
  psycopg's own check, the empty query, which reads it and fails, and the pool replaces
  the connection.
- **A connection idle for long is checked as before.** A connection not handed out for
  ``idle_after`` seconds (default 10) gets the empty query anyway: a firewall or NAT that
  forgets an idle connection sends nothing, and only a round trip finds out.
- So does a connection never handed out before, and one psycopg already knows is closed.
- **One broken connection means the rest are suspect.** When a check fails, every idle
  connection of the pool is checked at once (``AsyncConnectionPool.check()``, in the
  background). Otherwise each checkout finds the next broken one and psycopg's pool waits
  longer before every retry (0, 1, 2, 4, 8, 16 s). With SAQ's check, after a restart, an
  enqueue through a pool that had grown ended in ``PoolTimeout`` after 30 s, and an idle
  worker took its next job 15 s late.

What it cannot see, the old check could not see either: the server going away between
the check and the statement, or while the connection is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
import weakref
from typing import Any

from psycopg import AsyncConnection, BaseConnection
from psycopg_pool import AsyncConnectionPool

#: Seconds a connection may rest in the pool and still be handed out without a round trip.
CHECK_IDLE_AFTER = 10.0

#: Message types the server may send a session between statements that do not end it:
#: NotificationResponse, NoticeResponse, ParameterStatus.
ASYNC_MESSAGES = (b"A", b"N", b"S")

#: The most bytes a check peeks at; a longer backlog is checked with a round trip.
PEEK_BYTES = 65536


def socket_readable(conn: BaseConnection[Any]) -> bool:
    """Whether the server has sent anything to idle ``conn`` (or closed it), without waiting."""
    try:
        fd = conn.fileno()
    except Exception:  # closed: psycopg raises rather than give a descriptor
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # Windows: no poll()
    return bool(readable)


def only_notifications(conn: BaseConnection[Any]) -> bool:
    """Whether what waits on ``conn``'s socket is, as far as a peek shows, only messages a
    live session sends between statements: notifications (a connection that ran ``LISTEN``
    before it came back to the pool: SAQ's listener returns it so), notices and parameter
    changes. False for the end of the stream, an error (how the server says it ends a
    session), a message cut at the end of the peek, and anything it cannot read (TLS)."""
    if conn.pgconn.ssl_in_use or not hasattr(socket, "MSG_DONTWAIT"):
        return False
    try:
        sock = socket.socket(fileno=conn.fileno())
    except Exception:  # closed, or not a socket we can look at
        return False
    try:
        data = sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return False
    finally:
        sock.detach()  # the descriptor stays libpq's
    offset = 0
    while offset < len(data):
        if data[offset : offset + 1] not in ASYNC_MESSAGES or offset + 5 > len(data):
            return False
        offset += 1 + int.from_bytes(data[offset + 1 : offset + 5], "big")
    return 0 < offset == len(data)


async def _check_all(pool: AsyncConnectionPool[Any]) -> None:
    """``pool.check()``; a pool closed meanwhile is no error (its connections are gone)."""
    with contextlib.suppress(Exception):
        await pool.check()


class CheckoutCheck:
    """A ``check`` callback for ``psycopg_pool.AsyncConnectionPool``: psycopg's own check
    (an empty query) only for a connection that may be broken (see the module docstring).

    ``full_checks`` and ``skipped`` count the checkouts of each kind, ``purges`` the
    checks of the whole pool that a broken connection set off (``watch``).
    """

    def __init__(self, idle_after: float = CHECK_IDLE_AFTER) -> None:
        self.idle_after = idle_after
        self.full_checks = 0
        self.skipped = 0
        self.purges = 0
        self._pool: weakref.ref[AsyncConnectionPool[Any]] | None = None
        self._purging: asyncio.Task[None] | None = None
        # connection -> when it was last handed out (monotonic); its idle time is at most
        # the time since, so the bound errs towards checking
        self._handed_out: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    def needs_round_trip(self, conn: AsyncConnection[Any], now: float) -> bool:
        """Whether ``conn``, handed out at ``now``, must be checked with a round trip."""
        last = self._handed_out.get(conn)
        if last is None or now - last >= self.idle_after or conn.closed:
            return True
        return socket_readable(conn) and not only_notifications(conn)

    async def __call__(self, conn: AsyncConnection[Any]) -> None:
        now = time.monotonic()
        full = self.needs_round_trip(conn, now)
        self._handed_out[conn] = now
        if not full:
            self.skipped += 1
            return
        self.full_checks += 1
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            self._purge()
            raise

    def watch(self, pool: AsyncConnectionPool[Any]) -> None:
        """Let a broken connection found in ``pool`` trigger a check of all its idle ones."""
        self._pool = weakref.ref(pool)

    def _purge(self) -> None:
        """One broken connection found: the others that rested in the pool beside it are
        most likely broken too (a server restart ends every session). ``pool.check()``
        replaces them all at once, in the background; otherwise each checkout would find
        one more, and the pool waits longer before each retry (0, 1, 2, 4, 8 s...)."""
        pool = self._pool() if self._pool is not None else None
        if pool is None or (self._purging is not None and not self._purging.done()):
            return
        self._purging = asyncio.get_running_loop().create_task(_check_all(pool))
        self.purges += 1


def checked_pool(
    conninfo: str, idle_after: float = CHECK_IDLE_AFTER
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """The pool SAQ's ``PostgresQueue`` would build for ``conninfo`` (not opened; SAQ opens,
    sizes and closes it), with ``CheckoutCheck`` instead of a round trip per checkout."""
    check = CheckoutCheck(idle_after)
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        conninfo, check=check, open=False
    )
    check.watch(pool)
    return pool
