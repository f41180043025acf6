"""Build ordinary ``saq.Worker``s from a registry: one per queue, with the tasks and cron
jobs routed there, and the hooks shared so they run once per process."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any

from saq import Worker
from saq.job import CronJob
from saq.queue import Queue

from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.discovery.builder import resolve_registry
from domainjobs.registry import DEFAULT_QUEUE, CronSpec, Registry, RegistryOrRoots
from domainjobs.runtime import cron as cronticks
from domainjobs.runtime.hooks import HookRunner, attach_hooks
from domainjobs.runtime.trends import recorder_for

#: The worker is the one place a SAQ function name is set: a task's public name.
#: ``timers["sweep"]``: how often the queue is swept for dead workers' jobs (SAQ: 60 s);
#: safe to run often because domainjobs' queues never sweep a job a worker just took
#: (see ``domainjobs.brokers.sweep`` and docs/reliability.md).
WORKER_DEFAULTS: dict[str, Any] = {
    "concurrency": 10,
    "timers": {"sweep": 2},  # = domainjobs.brokers.sweep.SWEEP_PERIOD
}


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
) -> Worker[Any]:
    functions = [(spec.name, spec.function) for spec in registry.tasks_for(queue.name)]
    cron_jobs = [saq_cron_job(spec) for spec in registry.crons_for(queue.name)]
    kwargs = {**WORKER_DEFAULTS, "concurrency": concurrency, **saq_worker_kwargs}
    # a user's timers={"schedule": 5} keeps our sweep default: the dicts are merged
    kwargs["timers"] = {**WORKER_DEFAULTS["timers"], **(saq_worker_kwargs.get("timers") or {})}
    if kwargs.get("burst") and not kwargs.get("dequeue_timeout"):
        kwargs["dequeue_timeout"] = 1.0
    # the dashboard's trend counters: a per-job hook, flushed to the broker once a second
    recorder = recorder_for(queue)
    if recorder is not None:
        theirs = kwargs.get("after_process") or []
        theirs = [theirs] if callable(theirs) else list(theirs)
        kwargs["after_process"] = [recorder.after_process, *theirs]
    shutdown = [hooks.shutdown] if recorder is None else [hooks.shutdown, recorder.close]
    worker: Worker[Any] = Worker(
        queue,
        functions,
        cron_jobs=cron_jobs,
        startup=[hooks.startup],
        shutdown=shutdown,
        **kwargs,
    )
    attach_hooks(worker, hooks)
    if cron_jobs:
        cronticks.install(worker)  # one job per tick, keyed by public name and tick time
    return worker


def build_worker(
    registry_or_roots: RegistryOrRoots = None,
    *,
    queue: str | Queue = DEFAULT_QUEUE,
    url: str | None = None,
    concurrency: int = WORKER_DEFAULTS["concurrency"],
    **saq_worker_kwargs: Any,
) -> Worker[Any]:
    """An ordinary ``saq.Worker`` for one queue of the registry.

    ``queue`` is a queue name (connected through ``url``, or the configured broker) or a
    ``saq.Queue`` you made yourself. Every other keyword goes to ``saq.Worker``.
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
) -> list[Worker[Any]]:
    """One ``saq.Worker`` per queue (default: every queue of the registry).

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
