"""SAQ queues whose sweep never loses a job, and finds a dead worker's jobs within seconds
(DESIGN §7; docs/reliability.md says what is guaranteed and why plain SAQ does not).

``domainjobs.brokers`` builds every queue from these two names.
"""

from __future__ import annotations

from domainjobs.sweep_redis import SweepSafeRedisQueue
from domainjobs.sweep_rules import (
    LOST_AFTER,
    MAX_LOST,
    RECOVERY_BOUND,
    SETTLE,
    SWEEP_PERIOD,
    recovery_bound,
)

__all__ = [
    "LOST_AFTER",
    "MAX_LOST",
    "RECOVERY_BOUND",
    "SETTLE",
    "SWEEP_PERIOD",
    "SweepSafeRedisQueue",
    "postgres_queue_class",
    "recovery_bound",
]


def postgres_queue_class() -> type:
    """The PostgreSQL queue class to use (imported lazily: psycopg is an optional extra)."""
    from domainjobs.sweep_postgres import SweepSafePostgresQueue

    return SweepSafePostgresQueue
