"""``DomainWorker``, the one ``saq.Worker`` subclass domainjobs runs, and
``build_worker``/``build_workers``, which make one per queue of a registry with the tasks and
cron jobs routed there and the hooks shared so they run once per process.

Everything a domainjobs worker does beyond SAQ's (hooks once per process, one cron job per
tick, a graceful stop that never strands a job) is passed through ``saq.Worker``'s public
constructor arguments or written as an override of one of its methods here; nothing patches
a worker after it is built. The private SAQ attributes we still touch are listed in
``domainjobs.runtime.saq_internals``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any

from saq import Worker
from saq.job import CronJob, Job
from saq.queue import Queue

from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.discovery.builder import resolve_registry
from domainjobs.observability import state as observed
from domainjobs.registry import DEFAULT_QUEUE, CronSpec, Registry, RegistryOrRoots
from domainjobs.runtime import saq_internals
from domainjobs.runtime.cron import schedule_each_tick
from domainjobs.runtime.hooks import HookRunner
from domainjobs.runtime.job_hooks import with_domain_job_hooks
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
        super().__init__(
            queue,
            functions,
            startup=[self.hooks.startup, *_hook_list(startup)],
            shutdown=[*_hook_list(shutdown), self.hooks.shutdown],
            before_process=[self._track_slot, *_hook_list(before_process)],
            after_process=_hook_list(after_process) or None,
            **saq_kwargs,
        )

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
        """SAQ's upkeep loops, cancelled as soon as the worker stops (SAQ would wait for
        their sleeps, up to 10 s, e.g. after a burst worker drained its queue)."""
        tasks = await super().upkeep()

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
