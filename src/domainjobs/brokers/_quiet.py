"""SAQ's Redis queue without paying for log text nobody reads.

SAQ's ``RedisQueue._enqueue`` ends with ``logger.info("Enqueuing %s", job.info(...))`` and
``Queue.finish`` with ``logger.info("Finished %s", job.info(...))``: the argument, a text
built from every field of the job, is computed before the logger decides to drop the
record, so every enqueue and every finished job pays for it even with INFO off (as it is
in ``domainjobs run`` and in most web apps). ``QuietLogs`` does exactly what those two
methods do (the very same server script for the enqueue) and builds the text only when
the ``saq`` logger would emit it.

``SAQ_ENQUEUE_SCRIPT`` is SAQ's enqueue script byte for byte, so both register the same
SHA on the server and keep SAQ's stored job format, keys and duplicate-key rule (a job
whose key is still incomplete, or being aborted, is not enqueued again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

#: the ``saq`` logger, which SAQ's queues log to
saq_logger = logging.getLogger("saq")

# KEYS: incomplete, job id, queued, abort id. ARGV: job bytes, scheduled (0: queue now).
# Verbatim from saq.queue.redis.RedisQueue._enqueue (saq 0.26), whitespace included.
SAQ_ENQUEUE_SCRIPT = """
                if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
                    redis.call('SET', KEYS[2], ARGV[1])
                    redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
                    if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
                    return 1
                else
                    return nil
                end
                """  # noqa: E501


def enqueue_script(queue: RedisQueue) -> AsyncScript:
    """``queue``'s registered enqueue script (registered here on first use, as SAQ does)."""
    script = queue._enqueue_script
    if script is None:
        script = queue._enqueue_script = queue.redis.register_script(SAQ_ENQUEUE_SCRIPT)
    return script


def enqueue_keys(queue: RedisQueue, job: Job) -> list[str]:
    """The script's keys for ``job``: incomplete set, job id, queued list, abort id."""
    return [queue._incomplete, job.id, queue._queued, job.abort_id]


def log_enqueued(job: Job) -> None:
    """SAQ's "Enqueuing" record, its text built only if the ``saq`` logger emits it."""
    if saq_logger.isEnabledFor(logging.INFO):
        saq_logger.info("Enqueuing %s", job.info(saq_logger.isEnabledFor(logging.DEBUG)))


class QuietLogs(RedisQueue):
    """Mixin for a ``RedisQueue`` subclass: SAQ's ``_enqueue`` and ``finish`` minus the
    eager log text. Put it before ``RedisQueue`` in the bases:
    ``class Q(LeaseHolder, QuietLogs, RedisQueue)``.
    """

    async def _enqueue(self, job: Job) -> Job | None:
        script = enqueue_script(self)
        async with self._op_sem:
            if not await script(
                keys=enqueue_keys(self, job),
                args=[self.serialize(job), job.scheduled],
                client=self.redis,
            ):
                return None
        log_enqueued(job)
        return job

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``saq.Queue.finish``, its "Finished" text built only when it is logged."""
        job.status = status
        job.result = result
        job.error = error
        job.completed = now()
        if status == Status.COMPLETE:
            job.progress = 1.0
        await self._finish(job=job, status=status, result=result, error=error, **kwargs)
        if saq_logger.isEnabledFor(logging.INFO):
            saq_logger.info("Finished %s", job.info(saq_logger.isEnabledFor(logging.DEBUG)))
        if status == Status.COMPLETE:
            self.complete += 1
        elif status == Status.FAILED:
            self.failed += 1
        elif status == Status.ABORTED:
            self.aborted += 1
