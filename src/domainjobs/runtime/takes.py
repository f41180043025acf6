"""The take coalescer: the free slots of one worker share each round trip that takes jobs.

A slot of a ``DomainWorker`` that wants a job joins the *pending take*. The take is sent from
a task of its own one event-loop step after the first slot joined (slots freed in the same
step join it too), and asks the broker for exactly as many jobs as slots are waiting at
that moment (``SweepSafeRedisQueue.take_active_many``: one script takes them and marks each
active under the worker's lease), so no job is ever taken ahead of a free slot. While one
take is on its way, slots that free up meanwhile join the next one, sent as soon as the
first is back: under load one round trip takes several jobs.

The jobs are handed out in the order the slots joined. The slots left without a job (the
queue ran dry) fall back to the single take (``take_active``: the same script for one job,
then SAQ's blocking dequeue), but only one of them blocks on the queue; the others wait
for it. Once it has a job, they try a pending take again (a job rarely arrives alone); once
it has come back empty (its ``dequeue_timeout`` passed), they come back empty too, as
their own blocking dequeues would have: one connection waits on an idle queue, not one per
slot.

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
    """What a slot is handed when the pending take found no job for it."""


DRY = _Dry()

Handed = TakenJob | None | _Dry


class _Blocking:
    """The one slot blocking on an empty queue: the others wait for ``ended``."""

    __slots__ = ("ended", "found")

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.found = False


class TakeCoalescer:
    """Coalesces the takes of one worker's slots (module docstring).

    ``take_many(n)``: take and mark active up to ``n`` jobs in one round trip;
    ``put_back(jobs)``: put jobs taken for slots that are gone back on their queue;
    ``take_one()``: the single take, which may block while the queue is empty (``None``
    when it came back empty); ``stopping()``: whether the worker stops taking jobs.
    """

    def __init__(
        self,
        take_many: Callable[[int], Awaitable[list[TakenJob]]],
        put_back: Callable[[Sequence[TakenJob]], Awaitable[int]],
        take_one: Callable[[], Awaitable[TakenJob | None]],
        stopping: Callable[[], bool],
    ) -> None:
        self._take_many = take_many
        self._put_back = put_back
        self._take_one = take_one
        self._stopping = stopping
        self._waiting: list[asyncio.Future[Handed]] = []
        self._sender: asyncio.Task[None] | None = None
        self._blocking: _Blocking | None = None
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
        while True:
            handed = await self._next()
            if not isinstance(handed, _Dry):
                return handed
            blocking = self._blocking
            if blocking is None:
                return await self._block()
            await blocking.ended.wait()
            if not blocking.found or self._stopping():
                return None

    async def _next(self) -> Handed:
        """Join the pending take and wait for what it hands this slot."""
        future: asyncio.Future[Handed] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="domainjobs-take")
        try:
            return await future
        except asyncio.CancelledError:
            # handed a job, but cancelled before this slot could run: it goes back
            if future.done() and not future.cancelled() and future.exception() is None:
                handed = future.result()
                if isinstance(handed, TakenJob):
                    self._give_back([handed])
            raise

    async def _block(self) -> TakenJob | None:
        """The single (blocking) take, for this slot; the other dry slots wait for it."""
        blocking = self._blocking = _Blocking()
        try:
            taken = await self._take_one()
            blocking.found = taken is not None
            return taken
        finally:
            self._blocking = None
            blocking.ended.set()

    async def _send(self) -> None:
        """Send pending takes until no slot waits; hand out what each brings back."""
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
                jobs = iter(taken)
                for future in waiting:
                    if not future.done():  # a slot cancelled meanwhile gets nothing
                        future.set_result(next(jobs, DRY))
                left = list(jobs)
                if left:
                    await self._return(left)
        finally:
            self._sender = None

    def _give_back(self, taken: list[TakenJob]) -> None:
        task = asyncio.create_task(self._return(taken), name="domainjobs-put-back")
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

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
