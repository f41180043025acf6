"""What the dashboard's buttons do to jobs and cron jobs, and the same-origin rule every
state-changing request obeys.

An action returns None when done, or one sentence saying why it was not (the page shows
it): a job may have changed between the page and the click.

Actions are POST only. :class:`SameOriginPosts` refuses a POST (or any other unsafe method)
whose ``Origin`` header, or ``Referer`` when the browser sent no ``Origin``, is not this
very host: a page on another site cannot make a signed-in browser press our buttons, since
basic-auth credentials are sent by the browser whatever page made the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from saq.job import Job, Status
from saq.queue import Queue
from saq.queue.redis import RedisQueue

from domainjobs.runtime.pauses import set_paused
from domainjobs.web.auth import ASGIApp, send_plain

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FINISHED = frozenset({Status.COMPLETE, Status.FAILED, Status.ABORTED})
INCOMPLETE = frozenset({Status.NEW, Status.QUEUED, Status.ACTIVE})

RETRY_ERROR = "retried from the dashboard"
ABORT_ERROR = "aborted from the dashboard"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def same_origin(scope: dict[str, Any]) -> bool:
    """Whether the request's ``Origin`` (or ``Referer``) names the host it was sent to: its
    ``Host``, or the ``X-Forwarded-Host`` a proxy in front set (a page on another site
    cannot make a browser send that header)."""
    hosts = {_header(scope, b"host"), _header(scope, b"x-forwarded-host")}
    allowed = {h.split(",")[0].strip().lower() for h in hosts if h}
    source = _header(scope, b"origin") or _header(scope, b"referer")
    if not allowed or not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() in allowed


class SameOriginPosts:
    """ASGI middleware: 403 for an unsafe-method request that did not come from this site."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Pass safe and same-origin requests on; refuse the others."""
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or same_origin(scope):
            await self.app(scope, receive, send)
            return
        await send_plain(
            send, 403, b"403 Forbidden: a request that changes something must come from this page\n"
        )


async def retry_job(queue: Queue, job: Job) -> str | None:
    """Run a finished job again (one more attempt)."""
    if job.status not in FINISHED:
        return f"job {job.key} is {job.status.value}: only ended jobs can be retried"
    await queue.retry(job, RETRY_ERROR)
    return None


async def abort_job(queue: Queue, job: Job) -> str | None:
    """Abort a job that has not ended (a running one is cancelled by its worker)."""
    if job.status not in INCOMPLETE:
        return f"job {job.key} is {job.status.value}: only unfinished jobs can be aborted"
    await queue.abort(job, ABORT_ERROR)
    return None


async def delete_job(queue: Queue, job: Job) -> str | None:
    """Remove a job that is not running from the broker."""
    if job.status == Status.ACTIVE:
        return f"job {job.key} is running: abort it first"
    if isinstance(queue, RedisQueue):
        async with queue.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(queue.namespace("queued"), 0, job.id)
            pipe.zrem(queue.namespace("incomplete"), job.id)
            pipe.delete(job.id)
            await pipe.execute()
        return None
    pool = getattr(queue, "pool", None)
    table = getattr(queue, "jobs_table", None)
    if pool is None or table is None:
        return f"deleting jobs of a {type(queue).__name__} is not supported"
    from psycopg.sql import SQL  # the 'postgres' extra: only PostgreSQL queues get here

    async with pool.connection() as conn:
        await conn.execute(
            SQL("DELETE FROM {jobs} WHERE key = %s AND queue = %s").format(jobs=table),
            (job.key, queue.name),
        )
    return None


JOB_ACTIONS: dict[str, Callable[[Queue, Job], Awaitable[str | None]]] = {
    "retry": retry_job,
    "abort": abort_job,
    "delete": delete_job,
}


async def pause_cron(queue: Queue, name: str, paused: bool) -> str | None:
    """Pause or resume cron job ``name`` (see ``domainjobs.runtime.pauses``)."""
    try:
        await set_paused(queue, name, paused)
    except NotImplementedError as exc:
        return str(exc)
    return None
