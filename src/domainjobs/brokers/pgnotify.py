"""Job status notifications on PostgreSQL: ``NOTIFY`` when a job reaches a terminal state.

SAQ's ``PostgresQueue`` notifies only its own channel ``saq:<queue>``, with the payloads
``saq:enqueue`` and ``saq:dequeue`` (to wake dequeuers); nothing is published when a job
finishes, so a client waiting for a result had to poll. ``JobStatusNotify`` adds one
notification per finished job on a second channel, ``saq:job:<queue>``, with the payload
``<status>:<job key>``. It is sent on the connection that wrote the final status, once
that write is committed (SAQ's pool is in autocommit mode and ``_update`` commits its own
transaction), or inside the caller's transaction when one is given (``abort``): either way
PostgreSQL delivers it only after the finished row is visible, so a listener that reads
the job on receipt sees it. A worker that dies between the two leaves a waiter to its
safety re-read. Listening is ``domainjobs.client.waiting``'s side.

A worker without this mixin (a plain SAQ worker on the same table) sends nothing; waiters
then find the job by their safety re-read, as before, only later.
"""

from __future__ import annotations

from typing import Any

from psycopg.sql import SQL
from saq.job import Job, Status

from domainjobs.brokers.postgres import SweepSafePostgresQueue

#: Longest channel name PostgreSQL accepts (NAMEDATALEN - 1 bytes).
MAX_CHANNEL_BYTES = 63


def job_channel(queue_name: str) -> str:
    """The channel that carries ``queue_name``'s finished jobs, cut to PostgreSQL's limit.

    Two long queue names with the same first 55 bytes share a channel; the payload names
    the job, so each waiter still gets only its own job's news.
    """
    raw = f"saq:job:{queue_name}".encode()[:MAX_CHANNEL_BYTES]
    return raw.decode(errors="ignore")  # never half a UTF-8 character


def job_payload(status: str, job_key: str) -> str:
    """The notification text for ``job_key`` reaching ``status``."""
    return f"{status}:{job_key}"


class JobStatusNotify:
    """Mixin for a ``saq.queue.postgres.PostgresQueue`` (put it first in the bases):
    ``pg_notify`` the job's terminal status once the write that finishes it is done."""

    name: str
    pool: Any

    @property
    def job_channel(self) -> str:
        """The channel this queue notifies finished jobs on."""
        return job_channel(self.name)

    async def _finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        connection: Any = None,
    ) -> None:
        notify = SQL("SELECT pg_notify(%s, %s)")
        payload = job_payload(status.value, job.key)
        finish_fenced = getattr(self, "finish_fenced", None)
        if (
            connection is None
            and finish_fenced is not None
            and await finish_fenced(job, status, notify=(self.job_channel, payload))
        ):
            return  # written and notified in one statement, under the worker's lease
        finish = super()._finish  # type: ignore[misc]
        if connection is not None:  # the caller's transaction (abort): commit is theirs
            await finish(job, status, result=result, error=error, connection=connection)
            await connection.execute(notify, (self.job_channel, payload))
            return
        async with self.pool.connection() as conn:  # autocommit: status committed, then notify
            await finish(job, status, result=result, error=error, connection=conn)
            await conn.execute(notify, (self.job_channel, payload))


class NotifyingPostgresQueue(JobStatusNotify, SweepSafePostgresQueue):
    """domainjobs' PostgreSQL queue: ``SweepSafePostgresQueue`` plus finished-job
    notifications (what ``queue_from_url`` builds for ``postgresql://`` URLs)."""
