"""SAQ queues whose sweep never aborts a job a worker has just dequeued (DESIGN §7).

Placeholder: the race fix (issue 8) lands here. Until then these are SAQ's own queues.
"""

from __future__ import annotations

from saq.queue.redis import RedisQueue


class SweepSafeRedisQueue(RedisQueue):
    """A ``saq.queue.redis.RedisQueue`` (the race fix lands here)."""


def postgres_queue_class() -> type:
    """The PostgreSQL queue class to use (imported lazily: psycopg is an optional extra)."""
    from saq.queue.postgres import PostgresQueue

    return PostgresQueue
