"""The take coalescer: the free slots of one worker share each round trip that takes jobs.

A slot of a ``DomainWorker`` that wants a job joins the *pending take*. The take is sent from
a task of its own one event-loop step after the first slot joined (slots freed in the same
step join it too), and asks the broker for exactly as many jobs as slots are waiting at
that moment (``SweepSafeRedisQueue.take_active_many``: one script takes them and marks each
active under the worker's lease), so no job is ever taken ahead of a free slot. While one
take is on its way, slots that free up meanwhile join the next one, sent as soon as the
first is back: under load one round trip takes several jobs.

The jobs are handed out in the order the slots joined. Of the slots left without a job (the
queue ran dry), one waits on the empty queue (SAQ's blocking dequeue, ``BLMOVE``, up to the
worker's ``dequeue_timeout``; it marks the job it gets itself, as before) and the others
*park*: their tasks sleep, and a slot that frees up while one waits on the queue parks
too, without a round trip (the queue was empty at the last take; a job pushed since wakes
the waiting slot). When that slot is back with a job, the parked ones join one take (jobs
rarely come alone): one round trip takes whatever else came, and one of those left without
a job waits on the queue next. When it comes back empty, they come back empty too, as
their own blocking dequeues would have. So an idle worker waits on one connection, not one
per slot, and a job arriving at an idle worker costs the round trips it cost before
(a slot per ``BLMOVE`` each ran the take script first; here the one take of the parked
slots replaces it).

A slot can be cancelled while it waits (SAQ's ``Worker.stop`` cancels every slot after its
grace period, 0 s by default). The take itself is never cancelled with it, because it runs
in its own task: a job it brings back for a slot that is gone, or handed to a slot that was
cancelled before it could pick the job up, is put back at the head of its queue
(``SweepSafeRedisQueue.put_back``: one compare-and-set script, the job's bytes as they were
before the take, no attempt counted, not marked lost). Left to the sweep, such a job would
be put back only once the worker's lease ends, and counted as *lost* (docs/reliability.md).
``close`` waits for takes and put-backs still on their way; the worker calls it when it
stops, before its queue disconnects (which ends its lease).

After a stop is requested (``stopping()``), no take is sent any more: waiting slots get no
job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from domainjobs.brokers.leases import TakenJob

logger = logging.getLogger("domainjobs")

#: Longest ``close`` waits (seconds) for takes and put-backs still on their way.
CLOSE_TIMEOUT = 10.0


class _Dry:
    """What the slot that is to block on the empty queue is handed."""


DRY = _Dry()

Handed = TakenJob | None | _Dry


class TakeCoalescer:
    """Coalesces the takes of one worker's slots (module docstring).

    ``take_many(n)``: take and mark active up to ``n`` jobs in one round trip, never
    blocking; ``put_back(jobs)``: put jobs taken for slots that are gone back on their
    queue; ``wait_for_job()``: wait on the empty queue for one job, up to the worker's
    ``dequeue_timeout`` (``None`` when none came); ``stopping()``: whether the worker stops
    taking jobs.
    """

    def __init__(
        self,
        take_many: Callable[[int], Awaitable[list[TakenJob]]],
        put_back: Callable[[Sequence[TakenJob]], Awaitable[int]],
        wait_for_job: Callable[[], Awaitable[TakenJob | None]],
        stopping: Callable[[], bool],
    ) -> None:
        self._take_many = take_many
        self._put_back = put_back
        self._wait_for_job = wait_for_job
        self._stopping = stopping
        #: slots that join the next take
        self._waiting: list[asyncio.Future[Handed]] = []
        #: slots that wait for the one blocking on the empty queue (their tasks sleep)
        self._parked: list[asyncio.Future[Handed]] = []
        self._sender: asyncio.Task[None] | None = None
        #: a slot blocks on the empty queue (``blocking``), or was handed ``DRY`` to
        #: (``claimed``); while either is true, the queue was empty at the last take
        self._blocking = False
        self._claimed = False
        self._chores: set[asyncio.Task[None]] = set()
        #: round trips of ``take_many`` sent, and the jobs they took (benches and tests)
        self.round_trips = 0
        self.jobs_taken = 0
        #: jobs put back because the slot they were taken for was gone
        self.put_back_count = 0
        #: how many jobs the take on its way asked for (0: none is on its way)
        self.in_flight = 0

    async def take(self) -> TakenJob | None:
        """A job for the calling slot, or ``None`` (the queue stayed empty, or the worker
        stops). Broker errors and ``LeaseLostError`` from the take are raised to every slot
        that waited for it."""
        handed = await self._next()
        if not isinstance(handed, _Dry):
            return handed
        return await self._block()

    async def _next(self) -> Handed:
        """Join the next take (or, while the queue is known to be empty, park until the
        slot blocking on it is back) and wait for what this slot is handed."""
        future: asyncio.Future[Handed] = asyncio.get_running_loop().create_future()
        if self._blocking or self._claimed:
            # the queue was empty at the last take and a slot waits on it: a job pushed
            # since wakes that slot, and the parked ones take again when it is back
            self._parked.append(future)
        else:
            self._join(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                handed = future.result()
                if isinstance(handed, TakenJob):  # handed a job, cancelled before running it
                    self._give_back([handed])
                elif isinstance(handed, _Dry):  # it was to block: the parked slots take again
                    self._claimed = False
                    self._unpark(retake=True)
            raise

    def _join(self, future: asyncio.Future[Handed]) -> None:
        self._waiting.append(future)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="domainjobs-take")

    def _unpark(self, *, retake: bool) -> None:
        """The parked slots join the next take (``retake``), or get no job."""
        parked, self._parked = self._parked, []
        for future in parked:
            if future.done():
                continue
            if retake and not self._stopping():
                self._join(future)
            else:
                future.set_result(None)

    async def _block(self) -> TakenJob | None:
        """Wait on the empty queue for one job, for this slot. Once back with a job, the
        parked slots take again (more jobs may have come); empty-handed (the
        ``dequeue_timeout`` passed, or an error), they come back empty too."""
        self._claimed = False
        self._blocking = True
        found = False
        try:
            taken = await self._wait_for_job()
            found = taken is not None
            return taken
        finally:
            self._blocking = False
            self._unpark(retake=found)

    async def _send(self) -> None:
        """Send takes until no slot waits to join one; hand out what each brings back."""
        try:
            while self._waiting:
                waiting = [future for future in self._waiting if not future.done()]
                self._waiting = []
                if not waiting:
                    continue
                if self._stopping():
                    for future in waiting:
                        future.set_result(None)
                    continue
                self.in_flight = len(waiting)
                try:
                    taken = await self._take_many(len(waiting))
                except Exception as exc:
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (``close`` gave up on it): nothing to hand
                    for future in waiting:
                        future.cancel()
                    raise
                finally:
                    self.in_flight = 0
                self.round_trips += 1
                self.jobs_taken += len(taken)
                left = self._hand_out(waiting, taken)
                if left:
                    await self._return(left)
        finally:
            self._sender = None

    def _hand_out(
        self, waiting: list[asyncio.Future[Handed]], taken: list[TakenJob]
    ) -> list[TakenJob]:
        """One job per slot still waiting, in the order they joined; of the slots left
        without one, the first blocks on the queue (unless one does already), the others
        park. Returns the jobs no slot is left for."""
        jobs = iter(taken)
        for future in waiting:
            if future.done():  # a slot cancelled meanwhile gets nothing
                continue
            job = next(jobs, None)
            if job is not None:
                future.set_result(job)
            elif self._blocking or self._claimed:
                self._parked.append(future)
            else:
                self._claimed = True
                future.set_result(DRY)
        return list(jobs)

    def _give_back(self, taken: list[TakenJob]) -> None:
        task = asyncio.create_task(self._return(taken), name="domainjobs-put-back")
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def give_back(self, taken: list[TakenJob]) -> None:
        """Put back ``taken`` (jobs taken for slots that stopped) now; a failure is logged,
        and the sweep puts them back once the worker's lease ends."""
        if taken:
            await self._return(taken)

    async def _return(self, taken: list[TakenJob]) -> None:
        try:
            back = await self._put_back(taken)
        except Exception as exc:
            logger.warning(
                "could not put back %d job(s) taken for slots that stopped (%s: %s); the "
                "sweep puts them back once this worker's lease ends",
                len(taken),
                type(exc).__name__,
                exc,
            )
            return
        self.put_back_count += back
        logger.info("put back %d job(s) taken for slots that stopped", back)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Wait (up to ``timeout`` seconds) for the takes and put-backs on their way."""
        pending: list[asyncio.Task[Any]] = [*self._chores]
        if self._sender is not None:
            pending.append(self._sender)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            logger.warning(
                "a take was still on its way %gs into the stop; its jobs are put back by "
                "the sweep once this worker's lease ends",
                timeout,
            )
        # a take that came back meanwhile may have left put-backs of its own
        if self._chores:
            await asyncio.wait([*self._chores], timeout=timeout)
