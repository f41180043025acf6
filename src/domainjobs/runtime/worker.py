"""``DomainWorker``, the one ``saq.Worker`` subclass domainjobs runs, and
``build_worker``/``build_workers``, which make one per queue of a registry with the tasks and
cron jobs routed there and the hooks shared so they run once per process.

Everything a domainjobs worker does beyond SAQ's (hooks once per process, one cron job per
tick, a graceful stop that never strands a job, every write about a job fenced on the
worker's lease and retried until it lands; docs/reliability.md) is passed through
``saq.Worker``'s public constructor arguments or written as an override of one of its
methods here (how one job runs is ``runtime.jobrun``; how its slots share the round trips
that take jobs is ``runtime.takes``); nothing patches
a worker after it is built. The private SAQ attributes we still touch are listed in
``domainjobs.runtime.saq_internals``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import time
import traceback
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from saq import Worker
from saq.job import CronJob, Job, Status
from saq.queue import Queue
from saq.types import JobTaskContext
from saq.utils import cancel_tasks, now, uuid1

from domainjobs.brokers.leases import FENCE, LeaseHolder, TakenJob, lease_lost
from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.discovery.builder import resolve_registry
from domainjobs.errors import LeaseLostError
from domainjobs.observability import state as observed
from domainjobs.registry import DEFAULT_QUEUE, CronSpec, Registry, RegistryOrRoots
from domainjobs.runtime import saq_internals
from domainjobs.runtime.cron import schedule_each_tick
from domainjobs.runtime.hooks import HookRunner
from domainjobs.runtime.job_hooks import with_domain_job_hooks
from domainjobs.runtime.jobrun import Held, JobThread, call_async_job
from domainjobs.runtime.takes import TakeCoalescer
from domainjobs.runtime.trends import recorder_for

#: The worker is the one place a SAQ function name is set: a task's public name.
#: ``timers["sweep"]``: how often the queue is swept for dead workers' jobs (SAQ: 60 s);
#: safe to run often because domainjobs' queues never sweep a job a worker just took
#: (see ``domainjobs.brokers.sweep`` and docs/reliability.md).
WORKER_DEFAULTS: dict[str, Any] = {
    "concurrency": 10,
    "timers": {"sweep": 2},  # = domainjobs.brokers.sweep.SWEEP_PERIOD
}


#: Longest an idle slot blocks in a dequeue while ``run_workers`` runs it: the delay before a
#: stop is noticed.
IDLE_DEQUEUE_TIMEOUT = 1.0

Hook = Callable[[dict[str, Any]], Any]

logger = logging.getLogger("domainjobs")
#: SAQ's own per-job lines keep SAQ's logger (``runtime.logs`` turns them down)
saq_logger = logging.getLogger("saq")

#: Longest pause (seconds) between two attempts at a write the broker did not take.
MAX_WRITE_BACKOFF = 2.0
#: After the grace period, a thread job still running gets this many more seconds to end
#: before the process leaves it to its lease and exits.
THREAD_LAST_WAIT = 1.0
#: Longest pause (seconds) between two attempts to reach a broker that is gone.
MAX_BROKER_BACKOFF = 10.0


class DomainWorker(Worker[Any]):
    """A ``saq.Worker`` with domainjobs' process hooks, once-per-tick cron jobs and slot
    tracking for a graceful stop. Usable anywhere a ``saq.Worker`` is.

    ``hooks`` runs the registry's startup and shutdown hooks once per process, however many
    workers (one per queue) share it; the caller's own ``startup``/``shutdown``/
    ``before_process``/``after_process`` functions run too (startup after ours, shutdown
    before ours). Every other keyword is ``saq.Worker``'s.
    """

    def __init__(
        self,
        queue: Queue,
        functions: Any,
        *,
        hooks: HookRunner | None = None,
        startup: Sequence[Hook] | Hook | None = None,
        shutdown: Sequence[Hook] | Hook | None = None,
        before_process: Sequence[Hook] | Hook | None = None,
        after_process: Sequence[Hook] | Hook | None = None,
        **saq_kwargs: Any,
    ) -> None:
        self.hooks = hooks if hooks is not None else HookRunner((), ())
        #: the slot task running each job, so a stop cancels the slot (SAQ then re-queues
        #: the job) rather than the function (which would leave it ``active``)
        self.slots: dict[Job, asyncio.Task[Any]] = {}
        #: what each busy slot holds (the job, the lease it was taken under, ...)
        self.held: set[Held] = set()
        #: thread jobs still running when their slot was cancelled: left to their lease
        self.abandoned: list[Job] = []
        self.poll_interval = float(saq_kwargs.get("poll_interval", 0.0))
        self._backoff = 0.0
        self._backoff_until = 0.0
        self._down_since: float | None = None
        self._reviving = False
        self._reclaiming = False
        super().__init__(
            queue,
            functions,
            startup=[self.hooks.startup, *_hook_list(startup)],
            shutdown=[*_hook_list(shutdown), self.hooks.shutdown],
            before_process=[self._track_slot, *_hook_list(before_process)],
            after_process=_hook_list(after_process) or None,
            **saq_kwargs,
        )
        if isinstance(queue, LeaseHolder):
            queue.on_lease_lost(self._lease_lost)
        #: the slots' shared takes, on a queue that takes several jobs in one round trip
        self.takes: TakeCoalescer | None = None
        put_back = getattr(queue, "put_back", None)
        if all(hasattr(queue, name) for name in ("take_active_many", "wait_for_job")) and (
            put_back is not None
        ):
            self.takes = TakeCoalescer(
                self._take_many, put_back, self._wait_for_job, lambda: self.event.is_set()
            )
        #: jobs a finish took for the slot that finished (``_complete``), not started yet
        self.ahead: collections.deque[TakenJob] = collections.deque()
        #: a slot was cancelled while such a finish was on its way (its reply, and the job
        #: it took, may be lost): the stop looks for that job (``put_back_strays``)
        self._finish_cut_short = False
        #: jobs so found and put back (tests)
        self.strays_put_back = 0

    @property
    def transient_errors(self) -> tuple[type[BaseException], ...]:
        """The broker errors a write is retried after (the queue's, or OS-level ones)."""
        errors: tuple[type[BaseException], ...] = getattr(
            self.queue, "transient_errors", (ConnectionError, OSError)
        )
        return errors

    async def start(self) -> None:
        """Take a lease in the broker (when the queue has leases), then run as SAQ does."""
        if isinstance(self.queue, LeaseHolder):
            await self.queue.hold_lease(self.id)
        await super().start()

    def _lease_lost(self, worker_id: str) -> None:
        """Our lease lapsed: drop the jobs taken under it, and go on under a new worker id."""
        if worker_id == self.id:
            self.id = uuid1()
            logger.warning("worker %s goes on as worker %s (a new lease)", worker_id, self.id)
        for held in list(self.held):
            if held.fence == worker_id:
                held.dropped = True
                if held.task is not None and not held.task.done():
                    held.task.cancel()

    async def _ensure_lease(self) -> None:
        if isinstance(self.queue, LeaseHolder):
            await self.queue.hold_lease(self.id)

    # -- writes that land, or are dropped with the lease --------------------------------

    async def _land(self, held: Held, what: str, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` until the broker takes it; retried with backoff after broker errors
        until it lands or the lease the job was taken under is lost (``LeaseLostError``)."""
        job = held.job
        delay = 0.05
        failing_since: float | None = None
        while True:
            try:
                await write()
            except self.transient_errors as exc:
                if held.dropped or (
                    isinstance(self.queue, LeaseHolder) and self.queue.lease_is_lost(held.fence)
                ):
                    raise lease_lost(held.fence) from None
                if failing_since is None:
                    failing_since = time.monotonic()
                    self._revive_soon()
                    logger.warning(
                        "could not %s %s (%s: %s); retrying until the broker takes it",
                        what,
                        job.key,
                        type(exc).__name__,
                        exc,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_WRITE_BACKOFF)
            else:
                if failing_since is not None:
                    logger.info(
                        "%s %s: written after %.1fs",
                        what,
                        job.key,
                        time.monotonic() - failing_since,
                    )
                    self._reclaim_soon()
                return

    async def _broker_down(self, exc: BaseException) -> None:
        """Wait for a broker that is out of reach: one log line per back-off step, and the
        embedded broker started again if its server is gone."""
        moment = time.monotonic()
        if moment >= self._backoff_until:
            self._backoff = min(self._backoff * 2, MAX_BROKER_BACKOFF) if self._backoff else 0.5
            self._backoff_until = moment + self._backoff
            if self._down_since is None:
                self._down_since = moment
            logger.warning(
                "broker of queue %s out of reach for %.0fs (%s); next try in %gs",
                self.queue.name,
                moment - self._down_since,
                type(exc).__name__,
                self._backoff,
            )
            await self._revive()
        await asyncio.sleep(max(0.0, self._backoff_until - moment))

    async def _revive(self) -> None:
        """Start the embedded broker again if it is ours and gone (one attempt at a time)."""
        if self._reviving or not isinstance(self.queue, LeaseHolder):
            return
        self._reviving = True
        try:
            await self.queue.revive_broker()
        except Exception as revive_error:
            logger.warning("could not start the broker again: %s", revive_error)
        finally:
            self._reviving = False

    def _revive_soon(self) -> None:
        """``_revive`` in the background (a write retrying must not wait for it)."""
        if self._reviving or not isinstance(self.queue, LeaseHolder):
            return
        task = asyncio.create_task(self._revive())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _broker_back(self) -> None:
        if self._down_since is None:
            return
        logger.info(
            "broker of queue %s reachable again after %.1fs",
            self.queue.name,
            time.monotonic() - self._down_since,
        )
        self._down_since = None
        self._backoff = 0.0
        self._reclaim_soon()

    def _reclaim_soon(self) -> None:
        """After an outage: put back what the broker shows active under this worker that
        it no longer runs (one look at a time)."""
        reclaim = getattr(self.queue, "reclaim_orphans", None)
        if reclaim is None or self._reclaiming:
            return
        self._reclaiming = True
        task = asyncio.create_task(reclaim(self.id, self._held_ids))
        task.add_done_callback(self._reclaimed)
        self.tasks.add(task)

    def _reclaimed(self, task: asyncio.Task[list[str]]) -> None:
        self.tasks.discard(task)
        self._reclaiming = False
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.warning("could not look for orphaned jobs: %s", task.exception())
        elif task.result():
            logger.warning(
                "put back %d job(s) the broker still showed active under this worker "
                "(it lost writes in its restart)",
                len(task.result()),
            )

    async def _take(self) -> TakenJob | None:
        """The next job, whether the broker marked it active under this worker's lease as it
        handed it over, and that lease: through the slots' shared takes (``takes``) when the
        queue has them, else one ``take_active`` (or SAQ's dequeue) per slot."""
        while self.ahead:  # taken by the finish of this slot's last job
            ahead = self.ahead.popleft()
            if not (isinstance(self.queue, LeaseHolder) and self.queue.lease_is_lost(ahead.fence)):
                return ahead
        try:
            taken = await (self.takes.take() if self.takes is not None else self._take_one())
        except self.transient_errors as exc:
            await self._broker_down(exc)
            return None
        self._broker_back()
        return taken

    async def _take_one(self) -> TakenJob | None:
        """One job for one slot, in one round trip while jobs wait (``take_active``), else
        the queue's blocking dequeue (up to ``dequeue_timeout``)."""
        await self._ensure_lease()
        fence = self.id
        take_active = getattr(self.queue, "take_active", None)
        marked = False
        if take_active is not None:
            job, marked = await take_active(
                fence, timeout=self.dequeue_timeout, poll_interval=self.poll_interval
            )
        else:
            job = await self.queue.dequeue(
                timeout=self.dequeue_timeout, poll_interval=self.poll_interval
            )
        return None if job is None else TakenJob(job, marked, fence)

    async def _take_many(self, count: int) -> list[TakenJob]:
        """Up to ``count`` jobs, marked active under this worker's lease, in one round trip
        (never blocks)."""
        await self._ensure_lease()
        taken: list[TakenJob] = await self.queue.take_active_many(self.id, count)  # type: ignore[attr-defined]
        return taken

    async def _wait_for_job(self) -> TakenJob | None:
        """One job from the empty queue, once one comes (up to ``dequeue_timeout``),
        not marked (for the shared takes: the queue was empty at the last one)."""
        await self._ensure_lease()
        fence = self.id
        job: Job | None = await self.queue.wait_for_job(  # type: ignore[attr-defined]
            timeout=self.dequeue_timeout, poll_interval=self.poll_interval
        )
        return None if job is None else TakenJob(job, False, fence)

    async def stop(self) -> None:
        """SAQ's stop; then wait for the takes still on their way (a job one brings back for
        a slot that is gone is put back on its queue before the lease ends)."""
        await super().stop()
        if self.takes is not None:
            await self.takes.close()
        await self._put_back_ahead()
        strays = getattr(self.queue, "put_back_strays", None)
        if self._finish_cut_short and strays is not None:
            self._finish_cut_short = False
            try:
                self.strays_put_back += await strays(self.id, self._held_ids())
            except self.transient_errors as exc:
                logger.warning("could not look for jobs taken but not started: %s", exc)

    async def _put_back_ahead(self) -> None:
        """Put back the jobs finishes took for slots that stopped before starting them."""
        ahead = [taken for taken in self.ahead if taken.stored]
        self.ahead.clear()
        if self.takes is not None:  # only the shared takes' queues take ahead
            await self.takes.give_back(ahead)

    def _start_function(self, held: Held, context: dict[str, Any]) -> asyncio.Task[Any]:
        job = held.job
        function = self.functions[job.function]
        if inspect.iscoroutinefunction(function):
            held.task = asyncio.create_task(call_async_job(job, function, context))
        else:
            held.thread = JobThread(job, function, context)
            held.task = asyncio.create_task(held.thread.run())
        return held.task

    async def _last_wait(self, held: Held) -> tuple[tuple[Status], dict[str, Any]] | None:
        """A thread job whose slot was cancelled gets ``THREAD_LAST_WAIT`` more seconds; how
        to finish it if its thread ended meanwhile, else ``None``."""
        runner = held.thread
        assert runner is not None
        done, _ = await asyncio.wait([runner.future], timeout=THREAD_LAST_WAIT)
        if not done or runner.future.cancelled():
            return None
        error = runner.future.exception()
        if error is None:
            return (Status.COMPLETE,), {"result": runner.future.result()}
        text = "".join(traceback.format_exception(error))
        return (Status.FAILED,), {"error": text}

    async def process(self) -> bool:
        """SAQ's ``Worker.process`` (take a job, mark it active, run it, finish or retry
        it), with every write fenced on the worker's lease and retried until it lands, broker
        errors never counted as the job's failure, a task's ``SystemExit`` failing only its
        job, and a thread job left to its lease (not re-queued) when its slot is cancelled
        while its thread still runs."""
        context: dict[str, Any] | None = None
        job: Job | None = None
        held: Held | None = None
        task_ctx: JobTaskContext | None = None
        got: TakenJob | None = None
        completed: list[Any] = []  # the function's result, once it returned
        try:
            got = await self._take()
            if got is None:
                return False
            job, marked, fence = got.job, got.marked, got.fence
            taken = job
            FENCE.set(fence)  # this slot's context: the job's writes, and its function's
            held = Held(job, fence)
            self.held.add(held)
            if not marked:
                job.started = now()
                job.attempts += 1
                job.worker_id = fence
                await self._land(held, "mark active", lambda: taken.update(status=Status.ACTIVE))
            if held.dropped:  # the lease lapsed while the write was on its way
                raise lease_lost(fence)
            context = {**self.context, "job": job}
            await self._before_process(context)
            if saq_logger.isEnabledFor(logging.INFO):  # no log text nobody reads, per job
                saq_logger.info("Processing %s", job.info(saq_logger.isEnabledFor(logging.DEBUG)))
            task = self._start_function(held, context)
            task_ctx = JobTaskContext(task=task, aborted=None)
            self.job_task_contexts[job] = task_ctx
            try:
                result = await asyncio.wait_for(asyncio.shield(task), job.timeout or None)
            except asyncio.TimeoutError:
                if not task.done() or task.cancelled():
                    task.cancel()
                    raise
                result = task.result()  # it ended as the timeout fired (e.g. a blocked loop)
            if task_ctx["aborted"] is None:
                completed.append(result)
                await self._land(held, "finish", lambda: self._complete(taken, result))
        except asyncio.CancelledError:
            if not job or got is None or held is None or held.dropped:
                return False
            if completed:  # cancelled while its finish was on its way: finish it (again)
                self._finish_cut_short = True  # a next job it took may be left: ``stop``
                await self._land(
                    held, "finish", lambda: taken.finish(Status.COMPLETE, result=completed[0])
                )
                return False
            if task_ctx is None:  # cancelled after the take, before its function started
                await self._untake(held, got)
                return False
            task = task_ctx["task"]
            aborted = task_ctx["aborted"]
            if aborted is not None:
                await self._land(
                    held, "finish", lambda: taken.finish(Status.ABORTED, error=aborted)
                )
                return False
            if held.thread_running():
                finished = await self._last_wait(held)
                if finished is not None:
                    await self._land(
                        held, "finish", lambda: taken.finish(*finished[0], **finished[1])
                    )
                    return False
                self.abandoned.append(job)
                logger.warning(
                    "job %s is still running in its thread: not re-queued while it can still "
                    "complete; if this process exits first, its lease lapses and the job is "
                    "put back on the queue",
                    job.key,
                )
                return False
            if not task.done() and not await cancel_tasks([task], self._cancellation_deadline()):
                saq_logger.warning(
                    "Function: %s did not finish cancellation in time, it may be stuck",
                    job.function,
                )
            await self._land(held, "retry", lambda: taken.retry("cancelled"))
        except LeaseLostError as exc:
            if job is not None and held is not None:
                held.dropped = True
                logger.info("dropped %s: %s", job.key, exc)
        except Exception as ex:
            if context is not None:
                context["exception"] = ex
            if job is not None and held is not None and not held.dropped:
                saq_logger.exception("Error processing job %s", job)
                if task_ctx is not None and not task_ctx["task"].done():
                    await cancel_tasks([task_ctx["task"]], self._cancellation_deadline())
                error = traceback.format_exc()
                try:
                    if job.retryable:
                        await self._land(held, "retry", lambda: taken.retry(error))
                    else:
                        await self._land(
                            held, "finish", lambda: taken.finish(Status.FAILED, error=error)
                        )
                except LeaseLostError as lost:
                    logger.info("dropped %s: %s", job.key, lost)
        finally:
            if held is not None:
                self.held.discard(held)
            if (
                job is not None
                and task_ctx is not None
                and self.job_task_contexts.get(job) is task_ctx
            ):
                del self.job_task_contexts[job]
            if context:
                try:
                    await self._after_process(context)
                except (Exception, asyncio.CancelledError):
                    saq_logger.exception("Failed to run after process hook")
        return True

    async def _complete(self, job: Job, result: Any) -> None:
        """Finish ``job`` as complete. While the worker goes on, on a queue that can (the
        shared takes), the same round trip takes this slot's next job (``take_next``), which
        the slot's next ``_take`` starts: one round trip per job while jobs wait."""
        if self.takes is not None and not self.event.is_set() and not self.ahead:
            await self.queue.finish(job, Status.COMPLETE, result=result, take_next=self.ahead)
        else:
            await job.finish(Status.COMPLETE, result=result)

    def _held_ids(self) -> set[str]:
        """The ids of the jobs this worker holds: running (in a slot, or in a thread its
        slot left), or taken ahead for a slot."""
        ids = {held.job.id for held in self.held} | {taken.job.id for taken in self.ahead}
        return ids | {job.id for job in self.abandoned}  # thread jobs still running

    async def _untake(self, held: Held, got: TakenJob) -> None:
        """Give back a job this slot took but will not run: put back as it was before the
        take when nothing wrote to it since (``put_back``), else re-queued as SAQ does with
        a cancelled job (``retry("cancelled")``); never left to the sweep (which would count
        it as lost once the lease ends)."""
        put_back = getattr(self.queue, "put_back", None)
        if got.marked and got.stored and put_back is not None:
            try:
                if await put_back([got]):
                    return
            except self.transient_errors as exc:
                logger.debug("could not put back %s (%s); re-queueing it", got.job.key, exc)
        await self._land(held, "retry", lambda: got.job.retry("cancelled"))

    def _cancellation_deadline(self) -> float:
        return float(saq_internals.cancellation_deadline(self))

    async def _track_slot(self, ctx: dict[str, Any]) -> None:
        task = asyncio.current_task()
        if task is None:
            return
        job = ctx["job"]
        slots = self.slots
        slots[job] = task
        task.add_done_callback(lambda done: slots.pop(job) if slots.get(job) is done else None)

    async def schedule(self, lock: int = 1) -> None:
        """Offer each cron job's upcoming ticks, one job per tick (``runtime.cron``)."""
        await schedule_each_tick(self, lock)

    async def upkeep(self) -> list[asyncio.Task[None]]:
        """SAQ's upkeep loops (abort, schedule, sweep, worker info), quiet while the broker
        is out of reach (the slots report that, once per back-off step), and cancelled as
        soon as the worker stops (SAQ would wait for their sleeps, up to 10 s)."""

        async def poll(func: Callable[[int], Awaitable[Any]], sleep: int, arg: int = 0) -> None:
            while not self.event.is_set():
                try:
                    await func(arg or sleep)
                except self.transient_errors as exc:
                    logger.debug("upkeep %s: broker out of reach (%s)", func.__name__, exc)
                except (Exception, asyncio.CancelledError):
                    if self.event.is_set():
                        return
                    saq_logger.exception("Upkeep task failed unexpectedly")
                await asyncio.sleep(sleep)

        timers = self.timers
        tasks = [
            asyncio.create_task(poll(self.abort, timers["abort"])),
            asyncio.create_task(poll(self.schedule, timers["schedule"])),
            asyncio.create_task(poll(self.queue.sweep, timers["sweep"])),
            asyncio.create_task(
                poll(self.worker_info, timers["worker_info"], timers["worker_info"] + 1)
            ),
        ]

        async def end_upkeep() -> None:
            await self.event.wait()
            for task in tasks:
                task.cancel()

        return [*tasks, asyncio.create_task(end_upkeep())]

    def prepare_to_run(self, grace: float) -> None:
        """Hand signal handling to ``run_workers``, bound an idle dequeue, and set SAQ's own
        grace period as a backstop behind ours (``grace`` seconds for running jobs)."""
        self.SIGNALS = []
        if not self.burst and (not self.dequeue_timeout or self.dequeue_timeout > 5):
            self.dequeue_timeout = IDLE_DEQUEUE_TIMEOUT
        saq_internals.set_stop_deadlines(
            self,
            grace_period=int(grace + 2 * max(self.dequeue_timeout, 1) + 5),
            cancellation_deadline=3.0,
        )

    def running_job_slots(self) -> list[asyncio.Task[Any]]:
        """The slot tasks running a job function right now.

        Cancelling such a slot is what makes SAQ re-queue its job (``job.retry("cancelled")``);
        cancelling the function alone would not, and cancelling an idle slot in the middle of
        a dequeue could strand the job it was just handed.
        """
        return [
            slot
            for job, context in list(self.job_task_contexts.items())
            if not context["task"].done()
            and (slot := self.slots.get(job)) is not None
            and not slot.done()
        ]

    def stop_taking_jobs(self) -> None:
        """Wind down: no new slots, upkeep loops stopped, running jobs kept."""
        self.event.set()
        for task in list(self.tasks):
            if task.get_name() != "process":  # upkeep loops: schedule, sweep, stats, abort
                task.cancel()


def _hook_list(hooks: Sequence[Hook] | Hook | None) -> list[Hook]:
    if hooks is None:
        return []
    if callable(hooks):
        return [hooks]
    return list(hooks)


def renamed(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``function`` under ``__qualname__`` ``name``, for SAQ's cron scheduler.

    SAQ's scheduler enqueues ``cron_job.function.__qualname__`` with key ``cron:<qualname>``,
    so the function it holds must carry the public name. A plain function is cloned (same
    code, no extra call); anything else gets a thin wrapper.
    """
    if isinstance(function, types.FunctionType):
        clone = types.FunctionType(
            function.__code__,
            function.__globals__,
            function.__name__,
            function.__defaults__,
            function.__closure__,
        )
        clone.__kwdefaults__ = function.__kwdefaults__
        clone.__dict__.update(function.__dict__)
        clone.__module__ = function.__module__
        clone.__qualname__ = name
        return clone
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await function(*args, **kwargs)

        call_async.__qualname__ = name
        return call_async

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    call.__qualname__ = name
    return call


def saq_cron_job(spec: CronSpec) -> CronJob[Any]:
    """The ``saq.CronJob`` for a discovered cron spec, keyed by the task's public name."""
    return CronJob(
        renamed(spec.task.function, spec.name),
        cron=spec.cron,
        unique=spec.unique,
        kwargs=dict(spec.kwargs) if spec.kwargs is not None else None,
        **dict(spec.options),
    )


def _make_queue(queue: str | Queue, url: str | None) -> Queue:
    if isinstance(queue, Queue):
        return queue

    return queue_from_url(resolve_url(url), queue)


def _worker(
    registry: Registry,
    queue: Queue,
    hooks: HookRunner,
    concurrency: int,
    saq_worker_kwargs: dict[str, Any],
) -> DomainWorker:
    functions = [(spec.name, spec.function) for spec in registry.tasks_for(queue.name)]
    cron_jobs = [saq_cron_job(spec) for spec in registry.crons_for(queue.name)]
    kwargs = {**WORKER_DEFAULTS, "concurrency": concurrency, **saq_worker_kwargs}
    kwargs = observed.with_job_hooks(registry, kwargs)  # tracing/metrics per job, when on
    # a user's timers={"schedule": 5} keeps our sweep default: the dicts are merged
    kwargs["timers"] = {**WORKER_DEFAULTS["timers"], **(saq_worker_kwargs.get("timers") or {})}
    if kwargs.get("burst") and not kwargs.get("dequeue_timeout"):
        kwargs["dequeue_timeout"] = 1.0
    kwargs["before_process"], kwargs["after_process"] = with_domain_job_hooks(
        registry, kwargs.get("before_process"), kwargs.get("after_process")
    )
    # the dashboard's trend counters: a per-job hook, flushed to the broker once a second
    recorder = recorder_for(queue)
    if recorder is not None:
        kwargs["after_process"] = [recorder.after_process, *kwargs["after_process"]]
        kwargs["shutdown"] = [*_hook_list(kwargs.get("shutdown")), recorder.close]
    return DomainWorker(queue, functions, hooks=hooks, cron_jobs=cron_jobs, **kwargs)


def build_worker(
    registry_or_roots: RegistryOrRoots = None,
    *,
    queue: str | Queue = DEFAULT_QUEUE,
    url: str | None = None,
    concurrency: int = WORKER_DEFAULTS["concurrency"],
    **saq_worker_kwargs: Any,
) -> DomainWorker:
    """An ordinary ``saq.Worker`` for one queue of the registry.

    ``queue`` is a queue name (connected through ``url``, or the configured broker) or a
    ``saq.Queue`` you made yourself. Every other keyword goes to ``saq.Worker``; your own
    ``startup``/``shutdown``/``before_process``/``after_process`` functions run beside the
    registry's hooks.
    """
    registry = resolve_registry(registry_or_roots)
    hooks = HookRunner(registry.startup, registry.shutdown)
    return _worker(registry, _make_queue(queue, url), hooks, concurrency, saq_worker_kwargs)


def build_workers(
    registry_or_roots: RegistryOrRoots = None,
    *,
    queues: Sequence[str | Queue] | None = None,
    url: str | None = None,
    concurrency: int = WORKER_DEFAULTS["concurrency"],
    **saq_worker_kwargs: Any,
) -> list[DomainWorker]:
    """One ``DomainWorker`` (a ``saq.Worker``) per queue (default: every queue of the registry).

    Each of ``queues`` is a queue name or a ``saq.Queue`` you made yourself. The workers
    share one set of hooks: startup hooks run once for all of them, shutdown hooks once
    when the last one stops. Run them with ``domainjobs.run_workers``.
    """
    registry = resolve_registry(registry_or_roots)
    chosen: list[str | Queue] = list(queues) if queues else list(registry.queues)
    hooks = HookRunner(registry.startup, registry.shutdown)
    return [
        _worker(registry, _make_queue(queue, url), hooks, concurrency, saq_worker_kwargs)
        for queue in chosen or [DEFAULT_QUEUE]
    ]
