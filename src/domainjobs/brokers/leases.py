"""Worker leases and fencing (and SAQ's stuck-job step), shared by the sweep-safe Redis and
PostgreSQL queues (docs/reliability.md).

Every worker holds a *lease* in the broker, keyed by its worker id: an expiry in the broker's
own clock. The lease is the worker's fencing token:

- a lease is renewed only while it is still live: once it has lapsed it can never come back,
  so a worker cut off from the broker for longer than ``lost_after`` has lost it for good;
- every write a worker makes about a job it runs (mark it active, heartbeat, finish, retry)
  names the lease the job was taken under (``FENCE``, set by the worker around each job) and
  is refused by the broker, in the same script or SQL statement, unless that lease is live;
- the sweep puts a job back on its queue as soon as the lease it runs under has lapsed.

A refused write raises ``LeaseLostError``: the worker drops the job (it belongs to its queue
again), and re-registers under a new worker id, which is a new lease.

Leases are renewed from a thread with its own broker connection, so a blocked event loop
does not lapse them; a loop blocked for longer than ``LOOP_STALL_LIMIT`` seconds stops the
renewals (its jobs then go to other workers rather than wait forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

from saq.job import Job, Status
from saq.queue import Queue

from domainjobs.errors import LeaseLostError

logger = logging.getLogger("domainjobs")

#: The lease a worker took the job it is running under; writes made while it is set are
#: fenced on it. Set by ``DomainWorker`` in each job's task (and so inherited by the job
#: function and by the threads it runs in).
FENCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("domainjobs_fence", default=None)

#: A process whose event loop has not run for this long (seconds) stops renewing its leases.
LOOP_STALL_LIMIT = 120.0


def lease_lost(worker_id: str) -> LeaseLostError:
    """The error for a write refused because ``worker_id``'s lease has lapsed."""
    return LeaseLostError(
        f"the lease of worker {worker_id} has lapsed (it lost contact with the broker for "
        "too long): its jobs belong to their queue again, so this write was refused"
    )


def job_not_held(job: Job) -> LeaseLostError:
    """The error for a write about a job that is no longer the worker's (put back already)."""
    return LeaseLostError(
        f"job {job.key} is no longer held by worker {job.worker_id}: it was put back on its "
        "queue, so this write was refused"
    )


class TakenJob(NamedTuple):
    """One job a worker took: whether the take marked it active already, under which lease
    (``fence``), and what a put-back needs (a queue that cannot put jobs back leaves
    ``stored`` empty)."""

    job: Job
    marked: bool
    fence: str
    #: the job's bytes as the take left them in the broker (a put-back compares them)
    stored: bytes = b""
    #: their length before the take appended to them; 0 when the take left them unchanged
    cut: int = 0


class LeaseHolder(Queue):
    """Mixin for a SAQ queue class: ``class Q(LeaseHolder, RedisQueue)``. Its ``super()``
    calls reach the concrete queue (next in the MRO), never ``Queue``'s abstract methods."""

    lost_after: float
    settle: float
    max_lost: int
    #: broker errors a write may be retried after (the connection dropped, the server is
    #: restarting, ...), as opposed to a refusal
    transient_errors: tuple[type[BaseException], ...] = (ConnectionError, OSError)

    def _configure_leases(self, lost_after: float, settle: float, max_lost: int) -> None:
        """Validate and keep the sweep settings; call from ``__init__``."""
        if lost_after <= 0 or settle <= 0 or max_lost < 1:
            raise ValueError(
                f"{type(self).__name__} needs lost_after > 0, settle > 0 and max_lost >= 1 "
                f"(got {lost_after}, {settle}, {max_lost})"
            )
        self.lost_after = lost_after
        self.settle = settle
        self.max_lost = max_lost
        self._held: set[str] = set()
        #: leases this process held and lost (they lapsed): never renewed or written again
        self.lost_leases: set[str] = set()
        self._lost_listeners: list[Callable[[str], None]] = []
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_beat = time.monotonic()
        self._renewed_at = time.monotonic()
        #: How many sweeps this queue object ran (holding the sweep lock).
        self.sweeps_run = 0

    # -- what each broker provides ------------------------------------------------------

    @abstractmethod
    async def _register_leases(self, worker_ids: list[str]) -> None:
        """Write new leases for ``worker_ids``, live for ``lost_after`` from now."""

    @abstractmethod
    def _renew_leases_sync(self, worker_ids: list[str]) -> set[str]:
        """Extend the still-live leases of ``worker_ids`` (from the keeper thread, on its
        own connection); return the ids whose lease has lapsed (refused)."""

    @abstractmethod
    def _close_sync(self) -> None:
        """Close the keeper thread's connection."""

    @abstractmethod
    async def _end_leases(self, worker_ids: list[str]) -> None:
        """End the leases of ``worker_ids`` now."""

    async def revive_broker(self) -> bool:
        """Restart the broker if this process is the one that runs it (the embedded broker)
        and it is gone; return whether it was started again."""
        return False

    # -- holding -----------------------------------------------------------------------

    def on_lease_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(worker_id)`` (on the event loop) when a lease of ours lapses."""
        self._lost_listeners.append(callback)

    def lease_is_lost(self, worker_id: str) -> bool:
        """Whether ``worker_id``'s lease is known to have lapsed."""
        return worker_id in self.lost_leases

    async def hold_lease(self, worker_id: str) -> None:
        """Hold (and keep renewing) the lease of ``worker_id`` while this queue is connected.

        A lease that lapsed is never taken again: the worker must use a new id.
        """
        if worker_id in self._held or worker_id in self.lost_leases:
            return
        await self._register_leases([worker_id])
        self._renewed_at = time.monotonic()
        self._held.add(worker_id)
        self._start_keeper()

    def lease_lapsed(self, worker_id: str) -> None:
        """Record that ``worker_id``'s lease lapsed (a write or renewal was refused); tell
        the listeners once."""
        if worker_id in self.lost_leases:
            return
        self.lost_leases.add(worker_id)
        self._held.discard(worker_id)
        logger.warning(
            "the lease of worker %s on queue %s has lapsed (the broker was out of reach for "
            "more than %gs): its jobs are back on the queue, this process drops them",
            worker_id,
            self.name,
            self.lost_after,
        )
        for callback in list(self._lost_listeners):
            try:
                callback(worker_id)
            except Exception:
                logger.exception("a lease-lost listener failed")

    def _start_keeper(self) -> None:
        if self._keeper is not None and self._keeper.is_alive():
            return
        self._loop = asyncio.get_running_loop()
        self._loop_beat = time.monotonic()
        self._keeper_stop = threading.Event()
        self._keeper = threading.Thread(
            target=self._keep_leases,
            args=(self._keeper_stop, self._loop),
            name=f"domainjobs-lease-{self.name}",
            daemon=True,
        )
        self._keeper.start()

    def _beat(self) -> None:
        self._loop_beat = time.monotonic()

    def _keep_leases(self, stop: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
        """The keeper thread: renew every ``lost_after / 5`` s, whatever the event loop does."""
        failing_since: float | None = None
        try:
            while not stop.wait(self.lost_after / 5):
                with contextlib.suppress(RuntimeError):  # the loop is closed: we end soon
                    loop.call_soon_threadsafe(self._beat)
                stalled = time.monotonic() - self._loop_beat
                if stalled > LOOP_STALL_LIMIT:
                    continue  # the loop is wedged: let the leases lapse
                held = sorted(self._held)
                if not held:
                    continue
                try:
                    refused = self._renew_leases_sync(held)
                except Exception as exc:
                    if time.monotonic() - self._renewed_at > self.lost_after:
                        # out of reach for longer than a lease lasts: it has lapsed in the
                        # broker by now, so stop using it (the jobs are someone else's)
                        for worker_id in held:
                            with contextlib.suppress(RuntimeError):
                                loop.call_soon_threadsafe(self.lease_lapsed, worker_id)
                    if failing_since is None:
                        failing_since = time.monotonic()
                        logger.warning(
                            "could not renew worker leases on %s (%s); retrying every %gs",
                            self.name,
                            type(exc).__name__,
                            self.lost_after / 5,
                        )
                    continue
                self._renewed_at = time.monotonic()
                if failing_since is not None:
                    logger.info(
                        "worker leases on %s renewed again after %.1fs",
                        self.name,
                        time.monotonic() - failing_since,
                    )
                    failing_since = None
                for worker_id in refused:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(self.lease_lapsed, worker_id)
        finally:
            with contextlib.suppress(Exception):
                self._close_sync()

    async def release_leases(self, *, end: bool = True) -> None:
        """Stop renewing; with ``end``, end this process's leases now (their leftover jobs are
        put back at once), else leave them to lapse by themselves (``lost_after`` seconds)."""
        self._keeper_stop.set()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await asyncio.to_thread(keeper.join, self.lost_after)
        held, self._held = self._held, set()
        if held and end:
            with contextlib.suppress(Exception):
                await self._end_leases(sorted(held))

    # -- fencing -----------------------------------------------------------------------

    def fence(self) -> str | None:
        """The lease the current write is fenced on (``FENCE``), if any."""
        fence = FENCE.get()
        if fence is not None and fence in self.lost_leases:
            raise lease_lost(fence)
        return fence

    def refused(self, fence: str) -> LeaseLostError:
        """Record a refused write under ``fence``; the error to raise."""
        self.lease_lapsed(fence)
        return lease_lost(fence)

    # -- SAQ's stuck-job step ----------------------------------------------------------

    async def _sweep_stuck(self, job: Job, abort: float) -> None:
        """SAQ's own handling of a stuck job: abort it, give the worker ``abort`` seconds to
        stop it, then retry it if it has retries left, else finish it as aborted."""
        logger.info("Sweeping job %s", job.info(logger.isEnabledFor(logging.DEBUG)))
        await self.abort(job, error=self.swept_error_message)
        try:
            await job.refresh(abort)
        except asyncio.TimeoutError:
            logger.info("Could not abort job %s", job.key)
        if job.retryable:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)

    async def write_worker_info(self, worker_id: str, info: Any, ttl: int) -> None:
        """SAQ's worker stats, plus the worker's lease (so it exists before any job)."""
        await self.hold_lease(worker_id)
        await super().write_worker_info(worker_id, info, ttl)  # type: ignore[safe-super]

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        """SAQ's write; a job marked active by a worker without fencing (a plain
        ``saq.Worker``) gets a lease for that worker, so the sweep still finds it if it dies."""
        if status == Status.ACTIVE and job.worker_id and FENCE.get() is None:
            await self.hold_lease(job.worker_id)
        await super()._update(job, status, **kwargs)  # type: ignore[safe-super]

    async def disconnect(self) -> None:
        """Release the leases, then disconnect as SAQ does."""
        await self.release_leases()
        await super().disconnect()  # type: ignore[safe-super]
