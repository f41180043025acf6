"""The shapes shared by tracing and metrics: a per-job hook, what an instrumentation gives
each worker, and a job's status as both name it. Imports neither extra."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from saq.job import Status

if TYPE_CHECKING:
    from saq.job import Job
    from saq.queue import Queue

    from domainjobs.registry import TaskSpec

#: A SAQ ``before_process``/``after_process`` function.
JobHook = Callable[[Any], Awaitable[None]]


class Publisher(Protocol):
    """Enqueue ``job`` on ``queue`` (for task ``spec``) and return what SAQ returned."""

    def __call__(self, queue: Queue, job: Job, spec: TaskSpec) -> Awaitable[Job | None]: ...


class JobObserver(Protocol):
    """What an enabled instrumentation gives each worker: its per-job functions."""

    def job_hooks(self, domains: dict[str, str]) -> tuple[JobHook, JobHook]: ...


#: A job's status after a run, as spans and metrics name it.
STATUS_LABELS = {
    Status.COMPLETE: "complete",
    Status.FAILED: "failed",
    Status.ABORTED: "aborted",
    Status.ABORTING: "aborted",
    Status.QUEUED: "retried",
}


def status_label(job: Job) -> str:
    """``complete``, ``failed``, ``aborted`` or ``retried`` (re-queued for another attempt)."""
    status = job.status
    return STATUS_LABELS.get(status) or str(getattr(status, "value", status))
