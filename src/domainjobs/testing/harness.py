"""``JobsHarness``: a ``Jobs`` facade on a throwaway broker, the app's workers running in
this process, and ``drain()`` to run everything that was enqueued, jobs enqueued by jobs
included, before asserting on the results.

``drain`` waits until no queue of the registry holds a job that is queued, running, or
scheduled for a time already passed. It reads all the queues in one atomic step (a Redis
``MULTI``), and a job enqueues its children while it is itself still counted as running,
so "nothing pending" is never seen while a chain of jobs is still going. The workers keep
running between drains (``workers=False``: they run only inside ``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from typing_extensions import Self

from domainjobs.client.jobs import Jobs
from domainjobs.discovery.builder import resolve_registry
from domainjobs.errors import (
    DomainJobsError,
    DrainTimeoutError,
    HookError,
    JobsFailedError,
    WorkersStoppedError,
)
from domainjobs.registry import Registry, RegistryOrRoots
from domainjobs.runtime.runner import run_workers
from domainjobs.runtime.worker import DomainWorker, build_workers
from domainjobs.testing.broker import check_test_url, reset_broker, throwaway_broker
from domainjobs.testing.recorder import EnqueueRecorder, JobLog, queue_names

#: Seconds an idle worker slot blocks waiting for a job: how soon the workers stop.
DEQUEUE_TIMEOUT = 0.1

#: Default seconds ``drain`` waits before giving up.
DRAIN_TIMEOUT = 30.0

#: Seconds the workers get to run their startup hooks.
START_TIMEOUT = 30.0


class _ErrorLog(logging.Handler):
    """Collects what the ``domainjobs`` logger reports as errors while workers run."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {exc}"
        self.messages.append(text)


class JobsHarness:
    """The app's jobs on a throwaway broker, for tests (see the module docstring)::

        async with JobsHarness("app.domain") as harness:
            await harness.jobs.enqueue("accounts.send_welcome_email", user_id=1)
            log = await harness.drain()
            assert log.result("accounts.send_welcome_email") == "user1@example.com"

    ``url``: the broker (default: ``DOMAINJOBS_TEST_URL``, else a server started for the
    harness); ``reset`` empties it first. ``workers``: run the workers from the start
    (False: only inside ``drain``). ``cron``: let the workers schedule cron jobs (off, so
    that no job appears that the test did not cause). ``concurrency``: slots per queue.
    """

    def __init__(
        self,
        registry_or_roots: RegistryOrRoots = None,
        *,
        url: str | None = None,
        workers: bool = True,
        cron: bool = False,
        concurrency: int = 10,
        reset: bool = True,
    ) -> None:
        self._registry_or_roots = registry_or_roots
        self.url = url
        self.run_workers_from_start = workers
        self.cron = cron
        self.concurrency = concurrency
        self.reset = reset
        self._registry: Registry | None = None
        self._broker = contextlib.ExitStack()
        self._jobs: Jobs | None = None
        self._recorder: EnqueueRecorder | None = None
        self._workers: list[DomainWorker] = []
        self._run: asyncio.Task[int] | None = None
        self._errors = _ErrorLog()
        self._reported: set[tuple[str, str]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(raise_errors=exc is None)

    async def open(self) -> None:
        """Get the broker (and empty it), open the facade, start the workers."""
        if self._jobs is not None:
            return
        try:
            if self.url is None:
                self.url = self._broker.enter_context(throwaway_broker())
            check_test_url(self.url)  # drain reads Redis structures
            if self.reset:
                reset_broker(self.url)
            self._jobs = Jobs(self.registry, url=self.url)
            await self._jobs.open()
            self._recorder = EnqueueRecorder(self._jobs, self.registry)
            if self.run_workers_from_start:
                await self.start_workers()
        except BaseException:
            await self.close(raise_errors=False)
            raise

    async def close(self, *, raise_errors: bool = True) -> None:
        """Stop the workers (their shutdown hooks run), close the facade, stop the broker
        if the harness started it. ``HookError`` if a shutdown hook raised."""
        try:
            if self.workers_running:
                await self.stop_workers(raise_errors=raise_errors)
        finally:
            if self._jobs is not None:
                await self._jobs.close()
                self._jobs = None
            self._broker.close()

    @property
    def registry(self) -> Registry:
        """The registry (discovered on first use when roots were given)."""
        if self._registry is None:
            self._registry = resolve_registry(self._registry_or_roots)
        return self._registry

    @property
    def jobs(self) -> Jobs:
        """The ``Jobs`` facade, connected to the test broker."""
        if self._jobs is None:
            raise DomainJobsError("JobsHarness is not open: use `async with JobsHarness(...)`")
        return self._jobs

    @property
    def enqueued(self) -> EnqueueRecorder:
        """What was enqueued: ``await harness.enqueued()`` is a ``JobLog``."""
        if self._recorder is None:
            raise DomainJobsError("JobsHarness is not open: use `async with JobsHarness(...)`")
        return self._recorder

    @property
    def queues(self) -> Sequence[str]:
        """The queues the harness's workers serve and ``drain`` waits on."""
        return queue_names(self.registry)

    # -- workers -------------------------------------------------------------------------

    @property
    def workers_running(self) -> bool:
        """True while the in-process workers run."""
        return self._run is not None

    async def start_workers(self) -> None:
        """Start one worker per queue in this process and wait for their startup hooks."""

        if self._run is not None:
            return
        registry = self.registry if self.cron else dataclasses.replace(self.registry, crons=())
        self._workers = build_workers(
            registry,
            queues=self.queues,
            url=self.url,
            concurrency=self.concurrency,
            dequeue_timeout=DEQUEUE_TIMEOUT,
        )
        self._errors.messages.clear()
        logging.getLogger("domainjobs").addHandler(self._errors)
        self._run = asyncio.create_task(run_workers(self._workers, handle_signals=False))
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.001
        while not all(worker.tasks for worker in self._workers):
            if self._run.done():
                await self.stop_workers(raise_errors=False)
                raise self._stopped_error("could not start")
            if time.monotonic() > deadline:
                await self.stop_workers(raise_errors=False)
                raise WorkersStoppedError(
                    f"the in-process workers did not start within {START_TIMEOUT:g}s "
                    "(a startup hook still running?)"
                )
            await asyncio.sleep(delay)  # polling the workers' start, with a deadline
            delay = min(delay * 2, 0.02)

    def _stopped_error(self, what: str) -> WorkersStoppedError:
        said = "; ".join(self._errors.messages) or "see the log of the 'domainjobs' logger"
        return WorkersStoppedError(f"the in-process workers {what}: {said}")

    async def stop_workers(self, *, raise_errors: bool = True) -> None:
        """Stop the workers gracefully (running jobs finish; shutdown hooks run)."""
        run, self._run = self._run, None
        if run is None:
            return
        workers, self._workers = self._workers, []
        try:
            for worker in workers:
                worker.stop_taking_jobs()
            status = await run
        finally:
            logging.getLogger("domainjobs").removeHandler(self._errors)
        failed_hooks = sorted(
            {
                name
                for worker in workers
                if (hooks := worker.hooks) is not None
                for name in hooks.failed_shutdown_hooks
            }
        )
        if not raise_errors:
            return
        if failed_hooks:
            said = "; ".join(self._errors.messages)
            raise HookError(f"shutdown hook(s) {', '.join(failed_hooks)} raised: {said}")
        if status:
            raise self._stopped_error("stopped with an error")

    # -- draining ------------------------------------------------------------------------

    async def pending_count(self, *, scheduled: bool = False) -> int:
        """Jobs queued, running, or scheduled for a time already passed (every scheduled
        job with ``scheduled=True``), on all the queues, read in one atomic step."""
        queues = [await self.jobs.queue(name) for name in self.queues]
        client: Any = queues[0].redis  # type: ignore[attr-defined]
        upper: float | str = "+inf" if scheduled else time.time()
        async with client.pipeline(transaction=True) as pipe:
            for queue in queues:
                pipe.zcount(queue.namespace("incomplete"), "-inf", upper)  # type: ignore[attr-defined]
            counts = await pipe.execute()
        return int(sum(counts))

    async def drain(
        self,
        timeout: float = DRAIN_TIMEOUT,
        *,
        scheduled: bool = False,
        raise_on_failure: bool = True,
    ) -> JobLog:
        """Run every pending job, and those they enqueue, until none is left; return the
        ``JobLog`` of everything the broker holds.

        ``scheduled=True`` also waits for jobs scheduled in the future (retries with a
        delay among them). ``DrainTimeoutError`` after ``timeout`` seconds, listing what is
        still pending. Jobs that ended failed or aborted raise ``JobsFailedError`` with
        their errors (each is reported once), unless ``raise_on_failure=False``.
        """
        started_here = not self.workers_running
        if started_here:
            await self.start_workers()
        try:
            await self._wait_idle(timeout, scheduled)
        finally:
            if started_here:
                await self.stop_workers()
        log = await self.enqueued()
        if raise_on_failure:
            new = [job for job in log.failed if (job.queue, job.key) not in self._reported]
            self._reported.update((job.queue, job.key) for job in new)
            if new:
                raise JobsFailedError(JobLog(new, self.registry))
        return log

    async def _wait_idle(self, timeout: float, scheduled: bool) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while await self.pending_count(scheduled=scheduled):
            if self._run is not None and self._run.done():
                raise self._stopped_error("stopped while jobs were pending")
            if time.monotonic() > deadline:
                pending = (await self.enqueued()).pending
                raise DrainTimeoutError(
                    f"drain gave up after {timeout:g}s with {len(pending)} job(s) pending:\n"
                    f"{pending.listing()}"
                )
            await asyncio.sleep(delay)  # polling the broker, with a deadline
            delay = min(delay * 2, 0.05)
