"""``SweepSafePostgresQueue``: SAQ's PostgreSQL queue with worker leases (docs/reliability.md).

SAQ's PostgreSQL dequeue marks a job ``active`` in the same transaction that takes it, so
the Redis race (a job taken but not yet marked, aborted by the sweep) does not exist here.
What this queue adds is the same dead-worker rule as ``SweepSafeRedisQueue``: every process
holds a lease (table ``domainjobs_leases``: worker id -> expiry, in the database's clock),
renewed while the queue is connected, and the sweep puts a job back on its queue as soon as
the lease of the worker running it has lapsed, instead of waiting for the job's timeout
(SAQ's sweep then aborts it, and does not run it again when ``retries`` is 1).

A job taken by the queue but not yet picked up by a worker of the process is marked with
the queue's own lease id, so a process that dies holding such a job loses it too.

``take_active`` (what the worker calls) takes and marks jobs active in one transaction
under the worker's own lease: one fenced statement takes them (nothing when the lease has
lapsed), one more writes each job's ``started``, ``touched``, ``attempts`` and worker id
(SAQ's stored JSON, written by SAQ's own serializer) and sends SAQ's ``saq:dequeue``
notification, so the worker does not mark the job active again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections import Counter
from textwrap import dedent
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier
from saq.job import Job, Status
from saq.queue.postgres import DEQUEUE, ENQUEUE, PostgresQueue
from saq.utils import now, now_seconds

from domainjobs.brokers.leases import LeaseHolder, job_not_held, lease_lost
from domainjobs.brokers.pgcheck import CHECK_IDLE_AFTER, checked_pool, socket_readable
from domainjobs.brokers.sweep import (
    LOST_AFTER,
    MAX_LOST,
    SETTLE,
    Verdict,
    give_up_error,
    mark_lost,
    verdict_for_active,
)

logger = logging.getLogger("domainjobs")

LEASES_TABLE = "domainjobs_leases"
TICKS_TABLE = "domainjobs_cron_ticks"


def _as_bytes(payload: bytes | str) -> bytes:
    """A serialized job as the bytes its ``BYTEA`` column stores."""
    return payload.encode() if isinstance(payload, str) else payload


_SAQ_SIGNATURE = inspect.signature(PostgresQueue)


def _with_checked_pool(
    args: tuple[Any, ...], kwargs: dict[str, Any], idle_after: float
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``PostgresQueue``'s arguments, with the pool SAQ would build from ``url`` built here
    instead (``checked_pool``), still opened, sized and closed by the queue. Anything else
    (a pool given, both or neither, arguments SAQ rejects) is passed on as it came."""
    try:
        arguments = _SAQ_SIGNATURE.bind(*args, **kwargs).arguments
    except TypeError:
        return args, kwargs  # SAQ's own error says what is wrong
    url = arguments.get("url")
    if arguments.get("pool") is not None or not isinstance(url, str):
        return args, kwargs
    arguments["pool"] = checked_pool(url, idle_after)
    del arguments["url"]
    if arguments.get("manage_pool_lifecycle") is None:
        arguments["manage_pool_lifecycle"] = True  # SAQ's default for a pool it builds
    return (), dict(arguments)


class SweepSafePostgresQueue(LeaseHolder, PostgresQueue):
    """A ``saq.queue.postgres.PostgresQueue`` whose sweep finds a dead worker's jobs at once.

    ``lost_after``, ``settle`` and ``max_lost`` mean what they mean for
    ``SweepSafeRedisQueue``; ``leases_table`` names the lease table. Every other argument is
    ``PostgresQueue``'s.

    Built from a ``url`` (no ``pool``), the queue's pool checks a connection it hands out
    with a round trip only when the connection may be broken (``domainjobs.brokers.pgcheck``:
    its socket has something to read, or it rested ``check_idle_after`` seconds, default 10;
    ``0`` checks every checkout, as SAQ does). A ``pool`` passed in is used as it is.
    """

    transient_errors = (psycopg.OperationalError, ConnectionError, OSError)

    def __init__(
        self,
        *args: Any,
        lost_after: float = LOST_AFTER,
        settle: float = SETTLE,
        max_lost: int = MAX_LOST,
        leases_table: str = LEASES_TABLE,
        ticks_table: str = TICKS_TABLE,
        check_idle_after: float = CHECK_IDLE_AFTER,
        **kwargs: Any,
    ) -> None:
        args, kwargs = _with_checked_pool(args, kwargs, check_idle_after)
        super().__init__(*args, **kwargs)
        self._configure_leases(lost_after, settle, max_lost)
        self.leases_table = Identifier(leases_table)
        self.ticks_table = Identifier(ticks_table)
        self.dequeuer_id = f"dequeuer-{uuid.uuid4().hex}"
        self._sync: psycopg.Connection[Any] | None = None
        self._take_fences: Counter[str] = Counter()  # waiting ``take_active`` calls by lease
        self._marked: dict[str, str] = {}  # job key -> the lease its take marked it under
        self.on_lease_lost(self._dequeuer_lost)

    async def init_db(self) -> None:
        """SAQ's tables, plus the lease table."""
        await super().init_db()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                SQL("SELECT pg_advisory_xact_lock(%(key)s, hashtext('domainjobs_leases'))"),
                {"key": self.saq_lock_keyspace},
            )
            await conn.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {leases} "
                    "(worker_id TEXT PRIMARY KEY, expire_at DOUBLE PRECISION NOT NULL)"
                ).format(leases=self.leases_table)
            )
            await conn.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {ticks} "
                    "(key TEXT PRIMARY KEY, tick DOUBLE PRECISION NOT NULL)"
                ).format(ticks=self.ticks_table)
            )
        await self._wait_for_saq_tables()

    async def _wait_for_saq_tables(self, timeout: float = 30.0) -> None:
        """SAQ's ``init_db`` returns at once when another process holds its lock, maybe
        before that process has created the tables: wait until they exist."""
        deadline = time.monotonic() + timeout
        async with self.pool.connection() as conn:
            name = self.jobs_table.as_string(conn)
            while True:
                cursor = await conn.execute(SQL("SELECT to_regclass(%(name)s)"), {"name": name})
                row = await cursor.fetchone()
                if (row and row[0] is not None) or time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.05)

    # -- leases (the rest is LeaseHolder's) ---------------------------------------------

    async def _register_leases(self, worker_ids: list[str]) -> None:
        await self._write_leases(worker_ids, self.lost_after)

    async def _write_leases(self, worker_ids: list[str], ttl: float) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                SQL(
                    dedent(
                        """
                        INSERT INTO {leases} (worker_id, expire_at)
                        SELECT id, EXTRACT(EPOCH FROM NOW()) + %(ttl)s
                        FROM unnest(%(ids)s::text[]) id
                        ON CONFLICT (worker_id) DO UPDATE SET expire_at = EXCLUDED.expire_at
                        """
                    )
                ).format(leases=self.leases_table),
                {"ids": worker_ids, "ttl": ttl},
            )

    def _renew_leases_sync(self, worker_ids: list[str]) -> set[str]:
        if self._sync is not None and socket_readable(self._sync):
            self._close_sync()  # the server ended the session (a restart): a new one
        if self._sync is None or self._sync.closed:
            timeout = max(1, round(self.lost_after / 3))
            conninfo = self.pool.conninfo
            self._sync = psycopg.connect(
                conninfo if isinstance(conninfo, str) else "",
                autocommit=True,
                connect_timeout=timeout,
                options=f"-c statement_timeout={timeout * 1000}",
            )
        try:
            rows = self._sync.execute(
                SQL(
                    dedent(
                        """
                        UPDATE {leases} SET expire_at = EXTRACT(EPOCH FROM NOW()) + %(ttl)s
                        WHERE worker_id = ANY(%(ids)s) AND expire_at >= EXTRACT(EPOCH FROM NOW())
                        RETURNING worker_id
                        """
                    )
                ).format(leases=self.leases_table),
                {"ids": worker_ids, "ttl": self.lost_after},
            ).fetchall()
        except Exception:
            self._close_sync()
            raise
        return set(worker_ids) - {row[0] for row in rows}

    def _close_sync(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    async def _end_leases(self, worker_ids: list[str]) -> None:
        if self._connected:
            await self._write_leases(worker_ids, -1e9)

    def _dequeuer_lost(self, worker_id: str) -> None:
        if worker_id == self.dequeuer_id:
            self.dequeuer_id = f"dequeuer-{uuid.uuid4().hex}"

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        """SAQ's dequeue, under this process's own lease until a worker marks the job."""
        await self.hold_lease(self.dequeuer_id)
        job = await super().dequeue(timeout, poll_interval)
        if job is not None:
            self._marked.pop(job.key, None)
        return job

    async def take_active(
        self, fence: str, timeout: float = 0.0, poll_interval: float = 0.0
    ) -> tuple[Job | None, bool]:
        """Take the next job; ``(job, True)`` when the take marked it active under the lease
        ``fence`` already (``started``, ``attempts``, worker id written in the same
        transaction), ``(job, False)`` when the worker must mark it itself (the job was
        taken for other waiters too, e.g. another worker sharing this queue object). Raises
        ``LeaseLostError`` when the lease has lapsed (nothing is taken then)."""
        if fence in self.lost_leases:
            raise lease_lost(fence)
        await self.hold_lease(self.dequeuer_id)
        self._take_fences[fence] += 1
        try:
            job = await PostgresQueue.dequeue(self, timeout, poll_interval)
        finally:
            self._take_fences[fence] -= 1
            if not self._take_fences[fence]:
                del self._take_fences[fence]
        if job is None:
            return None, False
        marked = self._marked.pop(job.key, None) == fence
        if marked and fence in self.lost_leases:
            raise lease_lost(fence)  # the job stays active under the lapsed lease: swept
        return job, marked

    def _sole_fence(self) -> str | None:
        """The lease every waiting dequeue shares, if all of them are ``take_active``."""
        if len(self._take_fences) != 1:
            return None
        fence, waiting = next(iter(self._take_fences.items()))
        return fence if waiting == self._waiting else None

    async def _dequeue(self) -> None:
        fence = self._sole_fence()
        if fence is None:
            await super()._dequeue()
            return
        if self._dequeue_lock.locked():
            return
        async with self._dequeue_lock:
            jobs = await self._take_fenced(fence)
        for job in jobs:
            self._marked[job.key] = fence
            self._job_queue.put_nowait(job)

    async def _take_fenced(self, fence: str) -> list[Job]:
        """Take up to ``_waiting`` jobs and mark them active under ``fence``, in one
        transaction of two statements (one when there is nothing to take); nothing, and
        ``LeaseLostError``, when the lease of ``fence`` has lapsed."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            if not self._waiting:
                return []
            await cursor.execute(
                SQL(
                    dedent(
                        """
                        WITH lease AS (
                          SELECT EXISTS (SELECT 1 FROM {leases} WHERE worker_id = %(fence)s
                                         AND expire_at >= EXTRACT(EPOCH FROM NOW())) AS live
                        ),
                        locked_job AS (
                          SELECT key
                          FROM {jobs}
                          WHERE status = 'queued'
                            AND queue = %(queue)s
                            AND %(now)s >= scheduled
                            AND priority BETWEEN %(plow)s AND %(phigh)s
                            AND group_key NOT IN (
                              SELECT DISTINCT group_key
                              FROM {jobs}
                              WHERE status = 'active'
                                AND queue = %(queue)s
                                AND group_key IS NOT NULL
                            )
                            AND (SELECT live FROM lease)
                          ORDER BY priority, scheduled
                          LIMIT %(limit)s
                          FOR UPDATE SKIP LOCKED
                        ),
                        taken AS (
                          UPDATE {jobs} SET status = 'active'
                          FROM locked_job
                          WHERE {jobs}.key = locked_job.key
                          RETURNING job
                        )
                        SELECT lease.live, taken.job FROM lease LEFT JOIN taken ON true
                        """
                    )
                ).format(jobs=self.jobs_table, leases=self.leases_table),
                {
                    "queue": self.name,
                    "now": now_seconds(),
                    "limit": self._waiting,
                    "plow": self._priorities[0],
                    "phigh": self._priorities[1],
                    "fence": fence,
                },
            )
            rows = await cursor.fetchall()  # (lease live, job or NULL): one row at least
            if not rows or not rows[0][0]:
                raise self.refused(fence)
            payloads = [row[1] for row in rows if row[1] is not None]
            if not payloads:
                return []
            taken = now()
            jobs = []
            for payload in payloads:
                job = self.deserialize(payload, Status.ACTIVE)
                assert job
                job.started = job.touched = taken
                job.attempts += 1
                job.worker_id = fence
                jobs.append(job)
            await cursor.execute(
                SQL(
                    dedent(
                        """
                        WITH stamped AS (
                          UPDATE {jobs} SET job = stamp.job
                          FROM unnest(%(keys)s::text[], %(payloads)s::bytea[]) AS stamp(key, job)
                          WHERE {jobs}.key = stamp.key
                          RETURNING 1
                        )
                        SELECT pg_notify(%(channel)s, %(dequeue)s)
                        WHERE EXISTS (SELECT 1 FROM stamped)
                        """
                    )
                ).format(jobs=self.jobs_table),
                {
                    "keys": [job.key for job in jobs],
                    "payloads": [_as_bytes(self.serialize(job)) for job in jobs],
                    "channel": self._channel,
                    "dequeue": DEQUEUE,
                },
            )
        return jobs

    # -- fenced writes (the worker's, while ``FENCE`` is set) ----------------------------

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        if status == Status.ACTIVE and "connection" in kwargs:
            job.worker_id = self.dequeuer_id  # SAQ's dequeue: taken, not yet given to a worker
        fence = self.fence()
        if fence is None:
            await super()._update(job, status, **kwargs)
            return
        # No check of the stored status: SAQ's dequeue hands a job to a worker before its
        # transaction commits, so the worker's write waits for that commit and follows it.
        expire_at = kwargs.pop("expire_at", -1)
        if status:  # one statement, atomic on its own: no transaction around it
            job.status = status
            async with self.pool.connection() as conn:
                await self._write_fenced(conn, job, fence, expire_at)
            return
        async with self.pool.connection() as conn, conn.transaction():
            status = await self.get_job_status(job.key, for_update=True, connection=conn)
            job.status = status or job.status
            await self._write_fenced(conn, job, fence, expire_at)

    async def finish_fenced(
        self, job: Job, status: Status, *, notify: tuple[str, str] | None = None
    ) -> bool:
        """SAQ's ``_finish`` for a worker's write under its lease, in one autocommit
        statement: status, job, expiry and (``notify``: channel, payload) a ``pg_notify``
        once it lands. ``False`` (nothing written) outside a fenced write or for a job whose
        ``ttl`` deletes it; then SAQ's ``_finish`` is the way."""
        fence = self.fence()
        if fence is None or job.ttl < 0:
            return False
        job.touched = now()
        job.status = status
        expire_at = now_seconds() + job.ttl if job.ttl > 0 else None
        async with self.pool.connection() as conn:
            await self._write_fenced(conn, job, fence, expire_at, notify)
        return True

    async def _write_fenced(
        self,
        conn: psycopg.AsyncConnection[Any],
        job: Job,
        fence: str,
        expire_at: float | None,
        notify: tuple[str, str] | None = None,
    ) -> None:
        """Write ``job`` if the lease ``fence`` is live (in the database's clock); else raise
        ``LeaseLostError`` (or ``job_not_held`` when the row is gone)."""
        async with conn.cursor() as cursor:
            await cursor.execute(
                SQL(
                    dedent(
                        """
                        WITH written AS (
                          UPDATE {jobs} SET job = %(job)s, status = %(status)s,
                            scheduled = %(scheduled)s {expire_at}
                          WHERE key = %(key)s
                            AND EXISTS (SELECT 1 FROM {leases} WHERE worker_id = %(fence)s
                                        AND expire_at >= EXTRACT(EPOCH FROM NOW()))
                          RETURNING 1
                        )
                        SELECT {notify} FROM written
                        """
                    )
                ).format(
                    jobs=self.jobs_table,
                    leases=self.leases_table,
                    expire_at=SQL(", expire_at = %(expire_at)s" if expire_at != -1 else ""),
                    notify=SQL("pg_notify(%(channel)s, %(payload)s)" if notify else "1"),
                ),
                {
                    "job": self.serialize(job),
                    "status": job.status,
                    "scheduled": job.scheduled,
                    "expire_at": expire_at,
                    "key": job.key,
                    "fence": fence,
                    "channel": notify[0] if notify else None,
                    "payload": notify[1] if notify else None,
                },
            )
            if await cursor.fetchall():
                return
            await cursor.execute(
                SQL(
                    "SELECT 1 FROM {leases} WHERE worker_id = %(fence)s "
                    "AND expire_at >= EXTRACT(EPOCH FROM NOW())"
                ).format(leases=self.leases_table),
                {"fence": fence},
            )
            live = await cursor.fetchone()
        if live is None:
            raise self.refused(fence)
        raise job_not_held(job)

    # -- cron ticks -------------------------------------------------------------------------

    async def enqueue_tick(self, job: Job, tick: int, bound: float) -> bool:
        """Enqueue cron ``job`` for ``tick`` (epoch s) unless any process offered that tick
        before, or the tick is more than ``bound`` seconds old in the database's clock."""
        job.queue = self
        async with self.pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(
                SQL(
                    dedent(
                        """
                        INSERT INTO {ticks} (key, tick)
                        SELECT %(key)s, %(tick)s
                        WHERE %(tick)s >= EXTRACT(EPOCH FROM NOW()) - %(bound)s
                        ON CONFLICT (key) DO NOTHING
                        """
                    )
                ).format(ticks=self.ticks_table),
                {"key": job.id, "tick": tick, "bound": bound},
            )
            claimed = cursor.rowcount == 1
            await cursor.execute(
                SQL("DELETE FROM {ticks} WHERE tick < %(oldest)s").format(ticks=self.ticks_table),
                {"oldest": now_seconds() - 10 * bound - 3600},
            )
        return claimed and await self.enqueue(job) is not None

    # -- the sweep ------------------------------------------------------------------------

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """SAQ's sweep (expired rows, stuck jobs), plus: put back dead workers' jobs at once."""
        if not await self._sweep_lock():
            return []
        self.sweeps_run += 1
        async with self.pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(
                SQL(
                    "DELETE FROM {jobs} WHERE queue = %(queue)s "
                    "AND status IN ('aborted', 'complete', 'failed') AND %(now)s >= expire_at"
                ).format(jobs=self.jobs_table),
                {"queue": self.name, "now": now_seconds()},
            )
            await cursor.execute(
                SQL("DELETE FROM {stats} WHERE %(now)s >= expire_at").format(
                    stats=self.stats_table
                ),
                {"now": now_seconds()},
            )
            await cursor.execute(
                SQL("SELECT worker_id, expire_at < EXTRACT(EPOCH FROM NOW()) FROM {leases}").format(
                    leases=self.leases_table
                )
            )
            lapsed = {worker_id: bool(gone) for worker_id, gone in await cursor.fetchall()}
            await cursor.execute(
                SQL(
                    "SELECT key, job, status FROM {jobs} "
                    "WHERE queue = %(queue)s AND status IN ('active', 'aborting')"
                ).format(jobs=self.jobs_table),
                {"queue": self.name},
            )
            rows = await cursor.fetchall()
        swept = []
        for key, payload, status in rows:
            try:
                if await self._sweep_one(bytes(payload), status, lapsed, abort):
                    swept.append(key)
            except Exception:  # one bad job must not stop the sweep
                logger.exception("sweeping %s failed", key)
        return swept

    async def _sweep_lock(self) -> bool:
        if self._has_sweep_lock:
            return True
        async with self.pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(
                SQL("SELECT pg_try_advisory_lock(%(key1)s, hashtext(%(queue)s))"),
                {"key1": self.saq_lock_keyspace, "queue": self.name},
            )
            result = await cursor.fetchone()
        if result and not result[0]:
            return False
        self._has_sweep_lock = True
        return True

    async def _sweep_one(
        self, payload: bytes, status: str, lapsed: dict[str, bool], abort: float
    ) -> bool:
        job = self.deserialize(payload, status)
        if job is None:
            return False
        gone = lapsed.get(job.worker_id or "", False)
        if job.status == Status.ABORTING and gone:
            verdict = Verdict.FINISH_ABORTED
        else:
            verdict = verdict_for_active(
                job,
                lease_lapsed=gone,
                now_ms=now(),
                settle=self.settle,
                max_lost=self.max_lost,
                lease_live=(job.worker_id or "") in lapsed and not gone,
            )
        if verdict is Verdict.KEEP:
            return False
        if verdict is Verdict.STUCK:
            await self._sweep_stuck(job, abort)
            return True
        if verdict is Verdict.REQUEUE:
            mark_lost(job, job.worker_id)
            done = await self._replace(job, payload, "queued", scheduled=int(now_seconds()))
            if done:
                self.retried += 1
                logger.warning("Put back %s (its worker is gone)", job.info())
                async with self.pool.connection() as conn:
                    await self._notify(ENQUEUE, connection=conn)
            return done
        job.error = give_up_error(job) if verdict is Verdict.GIVE_UP else job.error
        job.status, job.completed = Status.ABORTED, now()
        expire_at = now_seconds() + max(job.ttl, 0) if job.ttl else None
        done = await self._replace(job, payload, "aborted", expire_at=expire_at)
        if done:
            self.aborted += 1
            logger.warning("Finished %s as aborted (%s)", job.info(), job.error)
        return done

    async def _replace(
        self,
        job: Job,
        expected: bytes,
        status: str,
        *,
        scheduled: int | None = None,
        expire_at: float | None = None,
    ) -> bool:
        """Write ``job`` with ``status`` if its row still holds ``expected`` (compare-and-set)."""
        async with self.pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(
                SQL(
                    dedent(
                        """
                        UPDATE {jobs} SET job = %(job)s, status = %(status)s,
                          scheduled = COALESCE(%(scheduled)s, scheduled), expire_at = %(expire_at)s
                        WHERE key = %(key)s AND job = %(expected)s
                        """
                    )
                ).format(jobs=self.jobs_table),
                {
                    "job": self.serialize(job),
                    "status": status,
                    "scheduled": scheduled,
                    "expire_at": expire_at,
                    "key": job.key,
                    "expected": expected,
                },
            )
            return cursor.rowcount == 1
