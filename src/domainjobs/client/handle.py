"""``JobHandle``: what ``Jobs.enqueue`` returns — the SAQ job plus typed ways to wait for it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Generic, Protocol, TypeVar, overload

from saq.job import Job, Status
from saq.utils import now_seconds

from domainjobs.client.reach import reports_unreachable, unreachable_queue
from domainjobs.errors import BrokerUnreachableError, JobFailedError

R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")


class JobWaiter(Protocol):
    """What a handle needs of the ``Jobs`` facade that made it: a way to wait for a job."""

    async def wait_for(self, job: Job, timeout: float | None = None) -> Job:
        """Wait until ``job`` is complete, failed or aborted, and return it."""
        ...


class JobHandle(Generic[R_co]):
    """A job enqueued through ``Jobs``.

    ``R_co`` is what the task function returns as declared (for an ``async def`` task a
    coroutine of its result); ``result()`` gives the result itself, so mypy knows that
    ``await (await jobs.enqueue(f)).result()`` is what ``await f(...)`` would be.

    ``created`` is False when a job with the same ``key`` was already queued, scheduled or
    running: this handle then refers to that existing job (nothing new was enqueued).
    """

    __slots__ = ("_jobs", "created", "job")

    def __init__(self, jobs: JobWaiter, job: Job, created: bool = True) -> None:
        self._jobs = jobs
        self.job = job
        self.created = created

    @property
    def key(self) -> str:
        """The job's key (unique per queue)."""
        return self.job.key

    @property
    def id(self) -> str:
        """The job's id on the broker."""
        return self.job.id

    @property
    def task(self) -> str:
        """The task's public name."""
        return self.job.function

    @property
    def queue(self) -> str:
        """The name of the queue the job is on."""
        return self.job.get_queue().name

    @property
    def status(self) -> Status:
        """The status when last read (``refresh`` reads it again)."""
        return Status(self.job.status)

    @reports_unreachable
    async def refresh(self) -> Job:
        """Read the job again from the broker and return it."""
        job = await self.job.get_queue().job(self.job.key)
        if job is None:
            raise LookupError(f"job {self.key!r} no longer exists on queue {self.queue!r}")
        self.job = job
        return job

    def _unreachable(self, exc: BaseException) -> BrokerUnreachableError:
        return unreachable_queue(self.job.get_queue(), exc)

    async def wait(self, timeout: float | None = None) -> Job:
        """Wait (on the completion notification) until the job is complete, failed or
        aborted; return it. ``JobTimeoutError`` after ``timeout`` seconds."""
        self.job = await self._jobs.wait_for(self.job, timeout)
        return self.job

    @overload
    async def result(self: JobHandle[Awaitable[T]], timeout: float | None = None) -> T: ...
    @overload
    async def result(self: JobHandle[T], timeout: float | None = None) -> T: ...
    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its result; ``JobFailedError`` if it failed or was
        aborted, ``JobTimeoutError`` after ``timeout`` seconds."""
        job = await self.wait(timeout)
        if job.status != Status.COMPLETE:
            raise JobFailedError(job)
        return job.result

    @reports_unreachable
    async def abort(self, reason: str = "aborted") -> None:
        """Abort the job: a queued or scheduled job never runs, a running one is cancelled.

        (SAQ leaves a job aborted before its scheduled time in ``aborting`` for ever; it is
        marked ``aborted`` here, since no worker holds it.)"""
        queue = self.job.get_queue()
        await queue.abort(self.job, reason)
        if self.job.status == Status.ABORTING and self.job.scheduled > now_seconds():
            await queue.finish_abort(self.job)

    def to_dict(self) -> dict[str, Any]:
        """What an API would show: key, task, queue, status, result (when complete), error."""
        job = self.job
        return {
            "key": job.key,
            "task": job.function,
            "queue": self.queue,
            "status": Status(job.status).value,
            "result": job.result if job.status == Status.COMPLETE else None,
            "error": job.error,
        }

    def __repr__(self) -> str:
        return (
            f"JobHandle(task={self.task!r}, key={self.key!r}, queue={self.queue!r}, "
            f"status={self.job.status!s}, created={self.created})"
        )
