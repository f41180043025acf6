"""Paused cron jobs: a set of task names per queue, kept in the broker.

The dashboard pauses and resumes cron jobs; every worker's scheduler asks
:func:`paused_crons` before it enqueues a tick (``domainjobs.runtime.cron``) and skips the
paused ones. A paused cron job's ticks are not enqueued at all (no job, no catch-up on
resume); a job of a tick already enqueued still runs.

Redis-protocol brokers keep the set in ``domainjobs:paused-crons:<queue>``; PostgreSQL in
table ``domainjobs_paused_crons``.
"""

from __future__ import annotations

from typing import Any

from saq.queue import Queue
from saq.queue.redis import RedisQueue

PAUSED_TABLE = "domainjobs_paused_crons"


def paused_key(queue: str) -> str:
    """The Redis key of a queue's paused set."""
    return f"domainjobs:paused-crons:{queue}"


def _postgres(queue: Queue) -> Any:
    """``queue`` when it is SAQ's PostgreSQL queue, else None."""
    try:
        from saq.queue.postgres import PostgresQueue  # the 'postgres' extra (psycopg)
    except ImportError:  # pragma: no cover - depends on the installed extras
        return None
    return queue if isinstance(queue, PostgresQueue) else None


async def _pg_conn_ready(conn: Any) -> None:
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {PAUSED_TABLE} "
        "(queue TEXT NOT NULL, task TEXT NOT NULL, PRIMARY KEY (queue, task))"
    )


async def paused_crons(queue: Queue) -> frozenset[str]:
    """The names of the cron jobs paused on ``queue`` (empty for an unknown broker)."""
    if isinstance(queue, RedisQueue):
        members: set[bytes] = await queue.redis.smembers(paused_key(queue.name))  # type: ignore[misc]
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)
    pg = _postgres(queue)
    if pg is None:
        return frozenset()
    async with pg.pool.connection() as conn:
        await _pg_conn_ready(conn)
        cursor = await conn.execute(
            f"SELECT task FROM {PAUSED_TABLE} WHERE queue = %s", (queue.name,)
        )
        return frozenset(row[0] for row in await cursor.fetchall())


async def set_paused(queue: Queue, name: str, paused: bool) -> None:
    """Pause (``paused=True``) or resume cron job ``name`` of ``queue``."""
    if isinstance(queue, RedisQueue):
        key = paused_key(queue.name)
        if paused:
            await queue.redis.sadd(key, name)  # type: ignore[misc]
        else:
            await queue.redis.srem(key, name)  # type: ignore[misc]
        return
    pg = _postgres(queue)
    if pg is None:
        raise NotImplementedError(f"{type(queue).__name__} cannot pause cron jobs")
    async with pg.pool.connection() as conn:
        await _pg_conn_ready(conn)
        if paused:
            await conn.execute(
                f"INSERT INTO {PAUSED_TABLE} (queue, task) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (queue.name, name),
            )
        else:
            await conn.execute(
                f"DELETE FROM {PAUSED_TABLE} WHERE queue = %s AND task = %s", (queue.name, name)
            )
