"""Wait for jobs to finish on the broker's completion notifications, not on a poll interval.

SAQ's Redis queue publishes every status change of a job on the channel named by the job
id (``Queue.notify``). A ``CompletionListener`` holds one pattern subscription per queue
(``saq:job:<queue>:*``) for as long as the facade is connected, and routes each message
to the futures waiting on that job id. On PostgreSQL, domainjobs' queue ``NOTIFY``s each
finished job on ``saq:job:<queue>`` (``domainjobs.brokers.pgnotify``); a
``PostgresCompletionListener`` holds one connection that ``LISTEN``s there. Either way the
subscription is confirmed before the first waiter is registered, and a waiter is
registered before its job is enqueued, so a job that finishes in a millisecond cannot
finish unseen.

Notifications are fire-and-forget, so a waiter also re-reads its job after a quiet spell
that grows: from 1 s to 10 s on Redis (every SAQ worker publishes there), from 50 ms to
1 s on PostgreSQL (a plain SAQ worker sharing the table sends nothing). A lost message
costs that much, never a hang. Queues without notifications at all (SAQ's own
``PostgresQueue``) are polled with a short back-off that starts at 2 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from saq.job import TERMINAL_STATUSES, Job
from saq.queue import Queue

logger = logging.getLogger("domainjobs")

TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATUSES)
RECHECK_START = 1.0
RECHECK_MAX = 10.0
PG_RECHECK_START = 0.05
PG_RECHECK_MAX = 1.0
POLL_START = 0.002
POLL_MAX = 0.2


def glob_escape(text: str) -> str:
    """``text`` with Redis glob-pattern characters escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class CompletionListener:
    """Job-completion notifications of one Redis queue, shared by every waiter."""

    #: The safety re-read's first and longest quiet spell, in seconds.
    recheck_start = RECHECK_START
    recheck_max = RECHECK_MAX

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.pattern = f"saq:job:{glob_escape(queue.name)}:*"
        self._waiters: dict[str, set[asyncio.Future[str]]] = defaultdict(set)
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        """True while the subscription is live."""
        return self._reader is not None and not self._reader.done()

    async def start(self) -> None:
        """Subscribe (once) and wait for the server to confirm the subscription."""
        if self.running:
            return
        async with self._lock:
            if self.running:
                return
            await self._close_pubsub()
            pubsub = self.queue.redis.pubsub()  # type: ignore[attr-defined]
            await pubsub.psubscribe(self.pattern)
            while True:  # the confirmation: from here on no message of this queue is missed
                message = await pubsub.get_message(timeout=5.0)
                if message is None:
                    await pubsub.aclose()
                    raise ConnectionError(f"no confirmation of subscription {self.pattern!r}")
                if message["type"] == "psubscribe":
                    break
            self._pubsub = pubsub
            self._reader = asyncio.create_task(self._read(pubsub), name=f"listen:{self.pattern}")

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None or message["type"] != "pmessage":
                    continue
                data = message["data"]
                status = data.decode() if isinstance(data, bytes) else str(data)
                if status not in TERMINAL_VALUES:
                    continue
                channel = message["channel"]
                self._resolve(channel.decode() if isinstance(channel, bytes) else channel, status)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._lost()

    def _resolve(self, job_id: str, status: str) -> None:
        for future in self._waiters.get(job_id, ()):
            if not future.done():
                future.set_result(status)

    def _lost(self) -> None:
        logger.warning("lost the job notifications of queue %s", self.queue.name, exc_info=True)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result("")

    def watch(self, job_id: str) -> asyncio.Future[str]:
        """A future resolved with the terminal status published for ``job_id``."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[job_id].add(future)
        return future

    def unwatch(self, job_id: str, future: asyncio.Future[str]) -> None:
        """Forget a future made by ``watch``."""
        futures = self._waiters.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiters[job_id]

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None

    async def _close_pubsub(self) -> None:
        await self._stop_reader()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    async def close(self) -> None:
        """Unsubscribe and release the connection."""
        await self._close_pubsub()


class PostgresCompletionListener(CompletionListener):
    """Finished-job notifications of one PostgreSQL queue (``LISTEN saq:job:<queue>``),
    on a connection of its own (autocommit, outside the queue's pool)."""

    recheck_start = PG_RECHECK_START
    recheck_max = PG_RECHECK_MAX

    def __init__(self, queue: Queue) -> None:
        super().__init__(queue)
        self.channel: str = queue.job_channel  # type: ignore[attr-defined]
        self._connection: Any = None

    async def start(self) -> None:
        """Connect and ``LISTEN`` (once); the channel is live when this returns."""
        if self.running:
            return
        async with self._lock:
            if self.running:
                return
            await self._close_pubsub()
            from psycopg import AsyncConnection  # extra: postgres (this queue implies it)
            from psycopg.sql import SQL, Identifier

            pool = self.queue.pool  # type: ignore[attr-defined]
            connection = await AsyncConnection.connect(
                pool.conninfo, **{**pool.kwargs, "autocommit": True}
            )
            try:
                await connection.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
            self._reader = asyncio.create_task(
                self._read(connection), name=f"listen:{self.channel}"
            )

    async def _read(self, connection: Any) -> None:
        try:
            async for notify in connection.notifies():
                # "<status>:<job key>" (domainjobs.brokers.pgnotify.job_payload)
                status, _, key = notify.payload.partition(":")
                if status in TERMINAL_VALUES:
                    self._resolve(key, status)
            raise ConnectionError("the notification stream ended")
        except asyncio.CancelledError:
            raise
        except Exception:
            self._lost()

    async def _close_pubsub(self) -> None:
        await self._stop_reader()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


def has_notifications(queue: Queue) -> bool:
    """True for queues that publish each job's status changes (SAQ's Redis queue, and
    domainjobs' PostgreSQL queue)."""
    if hasattr(queue, "redis"):
        return type(queue).notify is not Queue.notify
    return isinstance(getattr(queue, "job_channel", None), str)


def listener_for(queue: Queue) -> CompletionListener:
    """A (not yet started) listener for ``queue``, which ``has_notifications``."""
    if hasattr(queue, "redis"):
        return CompletionListener(queue)
    return PostgresCompletionListener(queue)


async def wait_for_job(
    queue: Queue,
    key: str,
    listener: CompletionListener | None,
    future: asyncio.Future[str] | None,
    timeout: float | None,
    *,
    check_first: bool = True,
) -> Job:
    """Wait until the job ``key`` is in a terminal state and return it.

    With a ``listener``, ``future`` must have been registered (``watch``) before the job
    could finish; ``check_first=False`` skips the first read when the caller has just
    enqueued the job. Without a listener the job is polled with a back-off from 2 ms.
    Raises ``TimeoutError`` after ``timeout`` seconds, ``LookupError`` if the job vanished.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    job_id = queue.job_id(key)
    recheck = RECHECK_START if listener is None else listener.recheck_start
    poll = POLL_START
    check = check_first or future is None
    try:
        while True:
            if check:
                job = await queue.job(key)
                if job is None:
                    raise LookupError(f"job {key!r} no longer exists on queue {queue.name!r}")
                if job.status in TERMINAL_STATUSES:
                    return job
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {key!r} on queue {queue.name!r} did not finish in time")
            if listener is None or future is None:
                await asyncio.sleep(poll if remaining is None else min(poll, remaining))
                poll = min(poll * 2, POLL_MAX)
                continue
            step = recheck if remaining is None else min(recheck, remaining)
            # asyncio.wait leaves the future alone on timeout (no shield layer needed)
            done, _ = await asyncio.wait((future,), timeout=step)
            if not done:
                # a safety re-read, not the usual path
                recheck = min(recheck * 2, listener.recheck_max)
                check = True
                continue
            # notified (or the subscription was lost): re-arm first, then read the job
            listener.unwatch(job_id, future)
            if not future.result():
                await listener.start()
            future = listener.watch(job_id)
            check = True
    finally:
        if listener is not None and future is not None:
            listener.unwatch(job_id, future)
