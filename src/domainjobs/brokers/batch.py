"""Enqueue many jobs at once: one pipelined round trip per chunk on Redis.

``enqueue_jobs`` does for each job what ``saq.Queue.enqueue`` does (bind it to the queue,
stamp ``queued``, set status ``queued``, run the queue's before-enqueue callbacks), then
sends them. On a Redis queue each chunk of ``chunk`` jobs is one pipeline of SAQ's own
enqueue script (``_quiet.SAQ_ENQUEUE_SCRIPT``), so the stored jobs, keys, notifications
and the duplicate-key rule are exactly SAQ's. Other queues (SAQ's ``PostgresQueue``)
enqueue one job after another through their own ``_enqueue``.

It is not atomic: when the broker fails part-way, the chunks sent before stay enqueued and
the error is raised.
"""

from __future__ import annotations

from collections.abc import Sequence

from saq.job import Job, Status
from saq.queue import Queue
from saq.queue.redis import RedisQueue
from saq.utils import now

from domainjobs.brokers._quiet import enqueue_keys, enqueue_script, log_enqueued

#: jobs per pipeline: large enough that the round trip is noise, small enough that one
#: pipeline's replies stay a few kilobytes and other clients are not held up
CHUNK = 500


async def _prepare(queue: Queue, job: Job) -> None:
    if job.queue and job.queue.name != queue.name:
        raise ValueError(f"Job {job} registered to a different queue")
    job.queue = queue
    job.queued = now()
    job.status = Status.QUEUED
    await queue._before_enqueue(job)


async def _enqueue_redis(queue: RedisQueue, jobs: Sequence[Job], chunk: int) -> list[Job | None]:
    script = enqueue_script(queue)
    enqueued: list[Job | None] = []
    for start in range(0, len(jobs), chunk):
        part = jobs[start : start + chunk]
        async with queue._op_sem, queue.redis.pipeline(transaction=False) as pipe:
            # checked (and loaded if missing) once per pipeline; redis-py types the set with its
            # sync Script, but it only reads .sha and .script
            pipe.scripts.add(script)  # type: ignore[arg-type]
            for job in part:
                keys = enqueue_keys(queue, job)
                pipe.evalsha(script.sha, len(keys), *keys, queue.serialize(job), job.scheduled)
            replies = await pipe.execute()
        for job, reply in zip(part, replies, strict=True):
            if reply:
                log_enqueued(job)
                enqueued.append(job)
            else:
                enqueued.append(None)
    return enqueued


async def enqueue_jobs(
    queue: Queue, jobs: Sequence[Job], *, chunk: int = CHUNK
) -> list[Job | None]:
    """Enqueue ``jobs`` on ``queue``; return, in order, each enqueued job, or None where a
    job with the same key was already incomplete (``saq.Queue.enqueue``'s rule)."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    for job in jobs:
        await _prepare(queue, job)
    if isinstance(queue, RedisQueue):
        return await _enqueue_redis(queue, jobs, chunk)
    return [await queue._enqueue(job) for job in jobs]
