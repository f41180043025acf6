"""How one job runs in a ``DomainWorker`` slot: its function as a task (``async def``) or in
a thread of its own (plain ``def``), and the slot's hold on it (the lease it was taken under).

A task's ``SystemExit``/``KeyboardInterrupt`` fails its job only (``TaskExitError``); a
thread job runs in a daemon thread, so a process that gives up on it at the end of its
grace period can still exit; the loop watchdog finds the job blocking the event loop by the
frame of ``call_async_job``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import types
from collections.abc import Awaitable, Callable
from typing import Any

from saq.job import Job

from domainjobs.errors import TaskExitError


async def call_async_job(
    job: Job, function: Callable[..., Awaitable[Any]], context: dict[str, Any]
) -> Any:
    """Run an ``async def`` task; ``SystemExit``/``KeyboardInterrupt`` fail the job only.

    The loop watchdog finds the job blocking the event loop by this function's frame.
    """
    try:
        return await function(context, **(job.kwargs or {}))
    except (SystemExit, KeyboardInterrupt) as exc:
        raise task_exit(job, exc) from None


def task_exit(job: Job, exc: BaseException) -> TaskExitError:
    """The error that fails a job whose task raised ``SystemExit``/``KeyboardInterrupt``."""
    return TaskExitError(
        f"task {job.function} raised {type(exc).__name__}({exc}); a task cannot end its "
        "worker, so this fails the job (it is retried if it has retries left)"
    )


def blocking_job(frame: types.FrameType | None) -> Job | None:
    """The job whose ``async def`` task is running in ``frame``'s stack, if any."""
    while frame is not None:
        if frame.f_code is call_async_job.__code__:
            job = frame.f_locals.get("job")
            return job if isinstance(job, Job) else None
        frame = frame.f_back
    return None


def describe_blocker(frame: types.FrameType | None) -> str | None:
    """``job <key> (task <name>)`` for the job running in ``frame``'s stack, if any."""
    job = blocking_job(frame)
    return None if job is None else f"job {job.key} (task {job.function})"


class Held:
    """One slot's hold on one job: the lease it was taken under, its thread (a plain
    ``def`` task), whether it was dropped. Compared by identity: a job put back and taken
    again by another slot of the same worker is another hold (``Job`` compares by key)."""

    __slots__ = ("dropped", "fence", "job", "task", "thread")

    def __init__(self, job: Job, fence: str) -> None:
        self.job = job
        self.fence = fence
        self.dropped = False
        self.task: asyncio.Task[Any] | None = None
        self.thread: JobThread | None = None

    def thread_running(self) -> bool:
        """Whether the job's thread is still running."""
        return self.thread is not None and self.thread.thread.is_alive()


class JobThread:
    """A plain ``def`` task running in its own daemon thread, so a process that gives up on
    it at the end of its grace period can still exit (a pool thread would be waited for)."""

    def __init__(self, job: Job, function: Callable[..., Any], context: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()
        copied = contextvars.copy_context()
        self.thread = threading.Thread(
            target=copied.run,
            args=(self._body, job, function, context),
            name=f"domainjobs-job-{job.key}",
            daemon=True,
        )

    def _body(self, job: Job, function: Callable[..., Any], context: dict[str, Any]) -> None:
        try:
            result = function(context, **(job.kwargs or {}))
        except (SystemExit, KeyboardInterrupt) as exc:
            self._settle(None, task_exit(job, exc))
        except BaseException as exc:
            self._settle(None, exc)
        else:
            self._settle(result, None)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: the process is ending
            self.loop.call_soon_threadsafe(settle)

    async def run(self) -> Any:
        """Start the thread and wait for its result (cancelling waits no longer; the thread
        runs on)."""
        self.thread.start()
        return await asyncio.shield(self.future)
