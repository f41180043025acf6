"""Run several ``saq.Worker``s in one process until a signal (or, in burst mode, until
their queues are drained), with one set of signal handlers for all of them, and stop them
without losing a job.

SAQ's ``Worker.start`` installs its own SIGINT/SIGTERM handler, which is fine for one
worker; with several on one loop each handler replaces the previous one, so only the last
worker would stop. ``run_workers`` takes signals over for all of them.

Graceful stop (first SIGINT/SIGTERM, ``max_jobs`` reached, or the parent supervisor gone):
no slot takes a new job once its current dequeue returns (at most ``dequeue_timeout``,
1 s, later); running jobs get ``grace`` seconds to finish; what is still running then is
cancelled and SAQ re-queues it (``job.retry("cancelled")``); the shutdown hooks run. A
second signal skips the rest of the grace period. Idle slots are never cancelled in the
middle of a dequeue, so no job is ever left half-taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from domainjobs.brokers.leases import LeaseHolder
from domainjobs.brokers.urls import wait_for_broker
from domainjobs.errors import ConfigError
from domainjobs.runtime.jobrun import describe_blocker
from domainjobs.runtime.watchdog import LoopWatchdog
from domainjobs.runtime.worker import DomainWorker

logger = logging.getLogger("domainjobs")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Default seconds running jobs get to finish once a stop is requested.
DEFAULT_GRACE = 25.0


class Shutdown:
    """The stop state of one process's workers: requested (graceful) and forced."""

    def __init__(self, workers: Sequence[DomainWorker], grace: float) -> None:
        self.workers = list(workers)
        self.grace = grace
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        """Stop taking jobs; running jobs get the grace period. A second call forces."""
        if self.requested.is_set():
            if not self.forced.is_set():
                logger.warning("%s again: cancelling running jobs now (they are re-queued)", reason)
                self.forced.set()
            return
        self.reason = reason
        self.requested.set()
        logger.info(
            "%s: finishing running jobs (up to %gs; signal again to stop at once)",
            reason,
            self.grace,
        )
        for worker in self.workers:
            worker.stop_taking_jobs()

    async def enforce_grace(self) -> None:
        """After the grace period (or a forced stop), cancel the jobs still running."""
        await self.requested.wait()
        try:
            await asyncio.wait_for(self.forced.wait(), timeout=self.grace)
        except asyncio.TimeoutError:
            if any(w.job_task_contexts for w in self.workers):
                logger.warning(
                    "grace period of %gs is over: cancelling running jobs (they are re-queued)",
                    self.grace,
                )
        cancelled: set[asyncio.Task[Any]] = set()
        while True:  # a slot may still hand a just-dequeued job to a function
            for worker in self.workers:
                for task in worker.running_job_slots():
                    if task not in cancelled:
                        cancelled.add(task)
                        task.cancel()
            await asyncio.sleep(0.05)


async def _leave_abandoned_jobs(workers: Sequence[DomainWorker]) -> None:
    """Thread jobs still running when the grace period ended are not re-queued while their
    thread may still complete them: their leases are left to lapse by themselves once this
    process has exited (its threads end with it), and the sweep puts the jobs back then."""
    for worker in workers:
        if worker.abandoned and isinstance(worker.queue, LeaseHolder):
            logger.warning(
                "%d thread job(s) still running at the end of the grace period; they are put "
                "back on the queue %gs after this process exits (when its lease lapses)",
                len(worker.abandoned),
                worker.queue.lost_after,
            )
            await worker.queue.release_leases(end=False)


def jobs_done(workers: Sequence[DomainWorker]) -> int:
    """Jobs that ended in this process so far (completed, failed, retried or aborted)."""
    queues = {id(w.queue): w.queue for w in workers}.values()
    return sum(q.complete + q.failed + q.retried + q.aborted for q in queues)


async def _watch_max_jobs(
    workers: Sequence[DomainWorker], max_jobs: int, shutdown: Shutdown
) -> None:
    while jobs_done(workers) < max_jobs:  # noqa: ASYNC110 - a counter, not an event
        await asyncio.sleep(0.05)
    shutdown.request(f"{max_jobs} job(s) done (--max-jobs): recycling this worker process")


async def _watch_event(stop: asyncio.Event, shutdown: Shutdown) -> None:
    await stop.wait()
    shutdown.request("stop requested")


async def _watch_parent(parent_pid: int, shutdown: Shutdown) -> None:
    while os.getppid() == parent_pid:  # noqa: ASYNC110 - no event for a parent's death
        await asyncio.sleep(0.5)
    shutdown.request(f"supervisor (pid {parent_pid}) is gone")


async def run_workers(
    workers: Sequence[DomainWorker],
    *,
    handle_signals: bool = True,
    grace: float = DEFAULT_GRACE,
    max_jobs: int | None = None,
    parent_pid: int | None = None,
    connect_timeout: float = 30.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Connect the workers' queues, run every worker, and return an exit status.

    ``grace`` is how long running jobs may take to finish once a stop is requested;
    ``max_jobs`` stops the workers gracefully after that many jobs (for recycling by a
    supervisor); ``parent_pid`` stops them when that process is no longer the parent;
    setting the ``stop`` event stops them gracefully, as a first signal would.

    Returns 0 when every worker stopped cleanly, 1 when a worker failed (a startup hook
    raised, the broker was unreachable, ...) or a shutdown hook raised.
    """
    for worker in workers:
        if not isinstance(worker, DomainWorker):
            raise ConfigError(
                f"run_workers runs domainjobs workers, but the worker of queue "
                f"{worker.queue.name!r} is a plain {type(worker).__name__}: make it with "
                "build_worker(s) or domainjobs.DomainWorker(queue, functions, ...)"
            )
    queues = list({id(w.queue): w.queue for w in workers}.values())

    for queue in queues:
        await wait_for_broker(queue, connect_timeout)
        await queue.connect()
    loop = asyncio.get_running_loop()
    shutdown = Shutdown(workers, grace)
    installed = []
    if handle_signals:
        for signum in STOP_SIGNALS:
            try:
                loop.add_signal_handler(
                    signum, shutdown.request, f"received {signal.Signals(signum).name}"
                )
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
    for worker in workers:
        worker.prepare_to_run(grace)
    watchdog = LoopWatchdog(describe_blocker)
    watchdog.start()
    helpers = [asyncio.create_task(shutdown.enforce_grace())]
    if max_jobs:
        helpers.append(asyncio.create_task(_watch_max_jobs(workers, max_jobs, shutdown)))
    if parent_pid:
        helpers.append(asyncio.create_task(_watch_parent(parent_pid, shutdown)))
    if stop is not None:
        helpers.append(asyncio.create_task(_watch_event(stop, shutdown)))
    tasks = [asyncio.create_task(w.start(), name=f"worker:{w.queue.name}") for w in workers]
    waiter = asyncio.create_task(shutdown.requested.wait())
    status = 0
    try:
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending and not shutdown.requested.is_set():
            done, pending_now = await asyncio.wait(
                {*pending, waiter}, return_when=asyncio.FIRST_COMPLETED
            )
            pending = {t for t in pending_now if t is not waiter}
            for task in done:
                if task is not waiter and task.exception() is not None:
                    logger.error("worker %s failed: %s", task.get_name(), task.exception())
                    status = 1
                    if not shutdown.requested.is_set():  # one failure is not a second signal
                        shutdown.request("a worker failed")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            status = 1
    finally:
        watchdog.stop()
        waiter.cancel()
        for helper in helpers:
            helper.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)
        await _leave_abandoned_jobs(workers)
        for queue in queues:
            try:
                await queue.disconnect()
            except Exception:
                logger.debug("disconnecting %s failed", queue, exc_info=True)
    hooks = {id(w.hooks): w.hooks for w in workers}
    if any(h.failed_shutdown_hooks for h in hooks.values()):
        status = 1
    logger.info("workers stopped (exit status %d)", status)
    return status
