"""Where the dashboard's trend buckets live: in the broker the queues already use.

- Redis-protocol brokers (Redis, Valkey, the embedded server): one hash per queue and
  bucket, ``domainjobs:trends:<queue>:<resolution>:<bucket start>``, one field per task
  whose value is the row's comma-separated integers. A worker's flush is one pipeline of
  one short Lua script per bucket (adding rows is atomic when several workers flush into
  the same minute); every key carries a TTL, so old buckets disappear by themselves.
- The last run of every cron job (its tick, status, start and end) sits beside them, in
  hash ``domainjobs:cron-runs:<queue>`` (table ``domainjobs_cron_runs``): the job itself
  expires soon after it ends, the schedules page still shows how it went.
- PostgreSQL: table ``domainjobs_trends`` (queue, resolution, bucket, task, row as
  ``bigint[]``), upserted the same way; rows older than their resolution's keep time are
  deleted by the flushes, at most once a minute per process.

Rows are plain ``list[int]``; their layout belongs to ``domainjobs.runtime.trends``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from saq.queue import Queue
from saq.queue.redis import RedisQueue

#: resolution name -> bucket start -> task -> row
Buckets = Mapping[str, Mapping[int, Mapping[str, Sequence[int]]]]

#: how long each resolution's buckets are kept: minutes 3 h, quarter-hours 26 h
KEEP_SECONDS = {"m": 3 * 3600, "q": 26 * 3600}

MERGE_SCRIPT = """
for i = 2, #ARGV, 2 do
  local value = ARGV[i + 1]
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current then
    local add = {}
    for n in string.gmatch(value, '[^,]+') do add[#add + 1] = tonumber(n) end
    local sums = {}
    local j = 0
    for n in string.gmatch(current, '[^,]+') do
      j = j + 1
      sums[j] = string.format('%d', tonumber(n) + (add[j] or 0))
    end
    for k = j + 1, #add do sums[k] = string.format('%d', add[k]) end
    value = table.concat(sums, ',')
  end
  redis.call('HSET', KEYS[1], ARGV[i], value)
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def _encode(row: Sequence[int]) -> str:
    end = len(row)
    while end > 1 and not row[end - 1]:
        end -= 1
    return ",".join(map(str, row[:end]))


def _decode(text: bytes | str) -> list[int]:
    raw = text.decode() if isinstance(text, bytes) else text
    return [int(part) for part in raw.split(",") if part]


class TrendStore(Protocol):
    """Adds and reads trend buckets of a broker."""

    async def add(
        self, queue: str, buckets: Buckets, cron_runs: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Add ``buckets``' rows to the stored ones (creating them as needed), and remember
        ``cron_runs`` (cron job name -> its last run) in place of older ones."""

    async def cron_runs(self, queue: str) -> dict[str, dict[str, Any]]:
        """The last run of each cron job of ``queue`` that was recorded."""

    async def read(
        self, queue: str, resolution: str, starts: Sequence[int]
    ) -> dict[int, dict[str, list[int]]]:
        """The stored rows of the buckets starting at ``starts`` (missing ones left out)."""


def bucket_key(queue: str, resolution: str, start: int) -> str:
    """The Redis key of one bucket."""
    return f"domainjobs:trends:{queue}:{resolution}:{start}"


def cron_runs_key(queue: str) -> str:
    """The Redis key of a queue's last cron runs."""
    return f"domainjobs:cron-runs:{queue}"


#: how long the last run of a cron job that no longer runs is remembered
CRON_RUNS_KEEP = 40 * 86400


class RedisTrendStore:
    """Trend buckets as Redis hashes with a TTL (see the module docstring)."""

    def __init__(self, queue: RedisQueue) -> None:
        self.redis = queue.redis
        self._merge: Any = None

    async def add(
        self, queue: str, buckets: Buckets, cron_runs: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """One pipeline: one merge script call per bucket, one HSET for the cron runs."""
        if self._merge is None:
            self._merge = self.redis.register_script(MERGE_SCRIPT)
        async with self.redis.pipeline(transaction=False) as pipe:
            for resolution, by_start in buckets.items():
                keep = KEEP_SECONDS[resolution]
                for start, rows in by_start.items():
                    args: list[Any] = [keep]
                    for task, row in rows.items():
                        args += [task, _encode(row)]
                    await self._merge(
                        keys=[bucket_key(queue, resolution, start)], args=args, client=pipe
                    )
            if cron_runs:
                key = cron_runs_key(queue)
                pipe.hset(key, mapping={n: json.dumps(r) for n, r in cron_runs.items()})
                pipe.expire(key, CRON_RUNS_KEEP)
            await pipe.execute()

    async def cron_runs(self, queue: str) -> dict[str, dict[str, Any]]:
        """HGETALL of the queue's cron runs."""
        found: dict[bytes, bytes] = await self.redis.hgetall(cron_runs_key(queue))  # type: ignore[misc]
        return {name.decode(): json.loads(value) for name, value in found.items()}

    async def read(
        self, queue: str, resolution: str, starts: Sequence[int]
    ) -> dict[int, dict[str, list[int]]]:
        """HGETALL of every bucket, in one pipeline."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(bucket_key(queue, resolution, start))
            results = await pipe.execute()
        out: dict[int, dict[str, list[int]]] = {}
        for start, fields in zip(starts, results, strict=True):
            if fields:
                out[start] = {task.decode(): _decode(value) for task, value in fields.items()}
        return out


TRENDS_TABLE = "domainjobs_trends"
CRON_RUNS_TABLE = "domainjobs_cron_runs"
PRUNE_EVERY = 60.0


class PostgresTrendStore:
    """Trend buckets as rows of table ``domainjobs_trends`` (see the module docstring)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self._ready = False
        self._pruned = 0.0

    async def _ensure_table(self, conn: Any) -> None:
        if self._ready:
            return
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TRENDS_TABLE} ("
            " queue TEXT NOT NULL, resolution TEXT NOT NULL, bucket BIGINT NOT NULL,"
            " task TEXT NOT NULL, counts BIGINT[] NOT NULL,"
            " PRIMARY KEY (queue, resolution, bucket, task))"
        )
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {CRON_RUNS_TABLE} ("
            " queue TEXT NOT NULL, task TEXT NOT NULL, run TEXT NOT NULL,"
            " PRIMARY KEY (queue, task))"
        )
        self._ready = True

    async def add(
        self, queue: str, buckets: Buckets, cron_runs: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """An upsert per row and cron run, old buckets pruned now and then."""
        rows = [
            (queue, resolution, start, task, list(row))
            for resolution, by_start in buckets.items()
            for start, by_task in by_start.items()
            for task, row in by_task.items()
        ]
        async with self.queue.pool.connection() as conn:
            await self._ensure_table(conn)
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    f"INSERT INTO {TRENDS_TABLE} AS t (queue, resolution, bucket, task, counts)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (queue, resolution, bucket, task) DO UPDATE SET counts ="
                    " (SELECT array_agg(COALESCE(a, 0) + COALESCE(b, 0) ORDER BY i)"
                    "  FROM unnest(t.counts, EXCLUDED.counts) WITH ORDINALITY AS u(a, b, i))",
                    rows,
                )
                if cron_runs:
                    await cursor.executemany(
                        f"INSERT INTO {CRON_RUNS_TABLE} (queue, task, run) VALUES (%s, %s, %s)"
                        " ON CONFLICT (queue, task) DO UPDATE SET run = EXCLUDED.run",
                        [(queue, n, json.dumps(r)) for n, r in cron_runs.items()],
                    )
            now = time.time()
            if now - self._pruned > PRUNE_EVERY:
                self._pruned = now
                for resolution, keep in KEEP_SECONDS.items():
                    await conn.execute(
                        f"DELETE FROM {TRENDS_TABLE} WHERE resolution = %s AND bucket < %s",
                        (resolution, int(now) - keep),
                    )

    async def read(
        self, queue: str, resolution: str, starts: Sequence[int]
    ) -> dict[int, dict[str, list[int]]]:
        """One query for every bucket asked for."""
        out: dict[int, dict[str, list[int]]] = {}
        if not starts:
            return out
        async with self.queue.pool.connection() as conn:
            await self._ensure_table(conn)
            cursor = await conn.execute(
                f"SELECT bucket, task, counts FROM {TRENDS_TABLE}"
                " WHERE queue = %s AND resolution = %s AND bucket = ANY(%s)",
                (queue, resolution, list(starts)),
            )
            for bucket, task, counts in await cursor.fetchall():
                out.setdefault(int(bucket), {})[task] = [int(c) for c in counts]
        return out

    async def cron_runs(self, queue: str) -> dict[str, dict[str, Any]]:
        """The queue's rows of ``domainjobs_cron_runs``."""
        async with self.queue.pool.connection() as conn:
            await self._ensure_table(conn)
            cursor = await conn.execute(
                f"SELECT task, run FROM {CRON_RUNS_TABLE} WHERE queue = %s", (queue,)
            )
            return {task: json.loads(run) for task, run in await cursor.fetchall()}


def store_for(queue: Queue) -> TrendStore | None:
    """The trend store of ``queue``'s broker, or None for a broker that has none."""
    if isinstance(queue, RedisQueue):
        return RedisTrendStore(queue)
    try:
        from saq.queue.postgres import PostgresQueue  # the 'postgres' extra (psycopg)
    except ImportError:  # pragma: no cover - depends on the installed extras
        return None
    if isinstance(queue, PostgresQueue):
        return PostgresTrendStore(queue)
    return None
