"""Worker leases (and SAQ's stuck-job step), shared by the sweep-safe Redis and PostgreSQL
queues (docs/reliability.md).

Every worker process holds a lease per worker id in the broker, renewed while its queue is
connected; the sweep puts a job back on its queue as soon as the lease of the worker running
it has lapsed. How a lease is written and ended is the broker's business
(``_write_leases``/``_end_leases``); holding, renewing and releasing them is the same
everywhere and lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from typing import Any

from saq.job import Job, Status
from saq.queue import Queue

logger = logging.getLogger("domainjobs")


class LeaseHolder(Queue):
    """Mixin for a SAQ queue class: ``class Q(LeaseHolder, RedisQueue)``. Its ``super()``
    calls reach the concrete queue (next in the MRO), never ``Queue``'s abstract methods."""

    lost_after: float
    settle: float
    max_lost: int

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
        self._renewer: asyncio.Task[None] | None = None
        #: How many sweeps this queue object ran (holding the sweep lock).
        self.sweeps_run = 0

    @abstractmethod
    async def _write_leases(self, worker_ids: list[str]) -> None:
        """Write (or extend) the leases of ``worker_ids`` to ``lost_after`` from now."""

    @abstractmethod
    async def _end_leases(self, worker_ids: list[str]) -> None:
        """End the leases of ``worker_ids`` now."""

    async def hold_lease(self, worker_id: str) -> None:
        """Hold (and keep renewing) the lease of ``worker_id`` while this queue is connected."""
        if worker_id in self._held:
            return
        self._held.add(worker_id)
        await self._write_leases([worker_id])
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name="domainjobs-lease")

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.lost_after / 5)
            try:
                await self._write_leases(sorted(self._held))
            except Exception:  # a broker hiccup must not end the renewals
                logger.warning("could not renew worker leases on %s", self.name, exc_info=True)

    async def release_leases(self) -> None:
        """Stop renewing and end this process's leases now (its leftover jobs are lost)."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer
        held, self._held = self._held, set()
        if held:
            with contextlib.suppress(Exception):
                await self._end_leases(sorted(held))

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
        if status == Status.ACTIVE and job.worker_id:
            await self.hold_lease(job.worker_id)
        await super()._update(job, status, **kwargs)  # type: ignore[safe-super]

    async def disconnect(self) -> None:
        """Release the leases, then disconnect as SAQ does."""
        await self.release_leases()
        await super().disconnect()  # type: ignore[safe-super]
