"""Every private SAQ attribute domainjobs touches, in one place, so a SAQ upgrade is auditable.

SAQ is pinned to one minor series (``saq>=0.26.4,<0.27`` in pyproject.toml) because of the
names below. Before widening the pin, check each one against the new SAQ source;
``tests/test_public_api.py`` fails when one of them is gone from the installed SAQ.

Private names are touched only where SAQ offers no public way; each entry says why. Our queue
classes override SAQ's documented extension points of ``saq.Queue`` (``sweep``, ``_update``,
``_retry``, ``_finish``, ``_enqueue``, ...) as SAQ's own queue classes do; overriding is not
touching, and those are listed too because SAQ may rename them.
"""

from __future__ import annotations

from typing import Any

#: (owner, attribute, where we use it, why)
PRIVATE_ATTRIBUTES: tuple[tuple[str, str, str, str], ...] = (
    (
        "saq.worker.Worker",
        "_shutdown_grace_period_s",
        "runtime.worker.DomainWorker.prepare_to_run",
        "the grace period is known only when run_workers starts, after the worker is built",
    ),
    (
        "saq.worker.Worker",
        "_cancellation_hard_deadline_s",
        "runtime.worker.DomainWorker.prepare_to_run",
        "same: SAQ's backstop behind our own graceful stop; also read by "
        "DomainWorker.process, which waits that long for a cancelled job function",
    ),
    (
        "saq.worker.Worker",
        "_before_process",
        "runtime.worker.DomainWorker.process",
        "our process() (fenced writes) runs the before_process hooks as SAQ's does",
    ),
    (
        "saq.worker.Worker",
        "_after_process",
        "runtime.worker.DomainWorker.process",
        "our process() runs the after_process hooks as SAQ's does",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_before_enqueue",
        "brokers.redis.SweepSafeRedisQueue.enqueue_tick",
        "runs the queue's before-enqueue callbacks for a cron tick enqueued by our script",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_active",
        "brokers.redis",
        "the key of the active list, read and written by our sweep's scripts",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_incomplete",
        "brokers.redis",
        "the key of the incomplete set, written by our sweep's scripts",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_queued",
        "brokers.redis",
        "the key of the queued list, where our sweep puts a lost job back",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_sweep",
        "brokers.redis",
        "the key of SAQ's sweep lock, shared with plain SAQ workers on the same queue",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_enqueue_script",
        "brokers._quiet, brokers.batch",
        "SAQ's enqueue script, run in a pipeline for batch enqueues (same stored job, same keys)",
    ),
    (
        "saq.queue.redis.RedisQueue",
        "_op_sem",
        "brokers.batch",
        "SAQ's bound on concurrent operations per queue, honoured by batch enqueues",
    ),
    (
        "saq.queue.base.Queue",
        "_before_enqueue",
        "brokers.batch",
        "runs the queue's before-enqueue callbacks for each job of a batch, as enqueue does",
    ),
    (
        "saq.queue.postgres.PostgresQueue",
        "_update",
        "brokers.postgres (override)",
        "renews the worker's lease with each status write",
    ),
    (
        "saq.queue.postgres.PostgresQueue",
        "_connected",
        "brokers.postgres._end_leases",
        "a lease is ended only while the pool is still open",
    ),
    (
        "saq.queue.postgres.PostgresQueue",
        "_has_sweep_lock",
        "brokers.postgres._sweep_lock",
        "SAQ's sweep lock, held for the life of the connection as SAQ's own sweep does",
    ),
    (
        "saq.queue.postgres.PostgresQueue",
        "_notify",
        "brokers.postgres",
        "wakes waiting workers after our sweep puts a job back",
    ),
    (
        "saq.queue.postgres.PostgresQueue",
        "_finish",
        "brokers.pgnotify (override)",
        "sends the finished-job notification on the connection that wrote the final status",
    ),
)


def cancellation_deadline(worker: Any) -> float:
    """How long a worker waits for a cancelled job function (see ``PRIVATE_ATTRIBUTES``)."""
    return float(worker._cancellation_hard_deadline_s)


def set_stop_deadlines(worker: Any, *, grace_period: int, cancellation_deadline: float) -> None:
    """Set SAQ's own stop deadlines on a built worker (see ``PRIVATE_ATTRIBUTES``)."""
    worker._shutdown_grace_period_s = grace_period
    worker._cancellation_hard_deadline_s = max(
        worker._cancellation_hard_deadline_s, cancellation_deadline
    )
