"""Run one task directly, in a context built exactly as a domainjobs worker builds it.

``TaskRunner`` makes the ``saq.Worker``s a worker process would make (one per queue, one
shared set of hooks), runs their startup functions on their contexts as
``saq.Worker.start`` does, and runs a task the way ``saq.Worker.process`` does: with
``{**worker.context, "job": job}`` where ``job`` is a ``saq.Job`` of that call, a plain
function in the worker's thread pool, the job's ``timeout`` enforced. Leaving the context
runs the shutdown functions as ``saq.Worker.stop`` does.

The arguments go through the same checks as ``Jobs.enqueue`` and through the queue's
serializer and back, and so does the result: the task sees what it would see from the
broker, and the caller gets what ``Jobs.apply`` would return. A direct run is one
attempt: no retries, and the job is not stored on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Concatenate, TypeVar, overload

from saq.job import Job, Status
from saq.queue import Queue
from saq.utils import now
from saq.worker import ensure_coroutine_function, ensure_coroutine_function_many
from typing_extensions import ParamSpec, Self

from domainjobs.brokers.redis import SweepSafeRedisQueue
from domainjobs.brokers.urls import queue_from_url
from domainjobs.client.arguments import Binder, check_serializable, dump_function
from domainjobs.discovery.builder import resolve_registry
from domainjobs.errors import DomainJobsError, HookError, UnserializableResultError
from domainjobs.registry import DEFAULT_QUEUE, Registry, RegistryOrRoots, TaskSpec
from domainjobs.runtime.hooks import HookRunner
from domainjobs.runtime.worker import DomainWorker, build_workers

P = ParamSpec("P")
R = TypeVar("R")


NO_BROKER_MESSAGE = (
    "this task used the broker, but the TaskRunner has no broker: pass "
    "TaskRunner(..., url=...) (domainjobs.testing.throwaway_broker() gives one), or use "
    "the run_task pytest fixture, which has one"
)


def offline_queue(name: str) -> Queue:
    """A real SAQ Redis queue called ``name`` whose connections refuse to open, with a
    sentence saying why: a worker context for tasks that never touch the broker."""
    import redis.asyncio as aioredis
    from redis.asyncio.connection import Connection
    from redis.exceptions import ConnectionError as RedisConnectionError

    class NoBrokerConnection(Connection):
        async def connect(self) -> None:
            raise RedisConnectionError(NO_BROKER_MESSAGE)

    pool = aioredis.ConnectionPool(connection_class=NoBrokerConnection)
    return SweepSafeRedisQueue(aioredis.Redis(connection_pool=pool), name=name)


def load_function(queue: Queue) -> Callable[[Any], Any]:
    """The deserializer a SAQ queue decodes jobs with (``json.loads`` unless configured)."""
    load = getattr(queue, "_load", None)
    return load if callable(load) else json.loads


class TaskRunner:
    """Run tasks directly with a worker's context (see the module docstring).

    ``registry_or_roots`` is a ``Registry`` or domains roots (default: the configured
    roots); ``url`` a broker for the workers' queues, for tasks that enqueue or read jobs
    (default: none, and a task touching the broker gets an error saying so)::

        async with TaskRunner("app.domain") as runner:
            address = await runner.run("accounts.send_welcome_email", user_id=1)
    """

    def __init__(self, registry_or_roots: RegistryOrRoots = None, *, url: str | None = None):
        self._registry_or_roots = registry_or_roots
        self.url = url
        self._registry: Registry | None = None
        self.hooks: HookRunner | None = None
        self.workers: dict[str, DomainWorker] = {}
        self._binders: dict[str, Binder] = {}
        self._started: list[DomainWorker] = []

    @property
    def registry(self) -> Registry:
        """The registry (discovered on first use when roots were given)."""
        if self._registry is None:
            self._registry = resolve_registry(self._registry_or_roots)
        return self._registry

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(raise_errors=exc is None)

    async def start(self) -> None:
        """Build the workers and run their startup functions (the startup hooks, once)."""
        if self.workers:
            return

        registry = self.registry
        names: Sequence[str] = registry.queues or (DEFAULT_QUEUE,)
        queues = [
            queue_from_url(self.url, name) if self.url else offline_queue(name) for name in names
        ]
        for worker in build_workers(registry, queues=queues, concurrency=1):
            self.workers[worker.queue.name] = worker
            self.hooks = worker.hooks
        try:
            for worker in self.workers.values():
                if self.url:
                    await worker.queue.connect()
                self._started.append(worker)
                for startup in worker.startup or ():
                    await startup(worker.context)
        except BaseException:
            await self.close(raise_errors=False)
            raise

    async def close(self, *, raise_errors: bool = True) -> None:
        """Run the workers' shutdown functions (the shutdown hooks, once, in reverse order,
        each one even when another raised) and release the queues. ``HookError`` if a
        shutdown hook raised (its traceback is logged by the ``domainjobs`` logger)."""
        started, self._started = self._started, []
        for worker in started:
            worker.pool.shutdown(wait=True, cancel_futures=True)
            if worker.shutdown:
                with ThreadPoolExecutor() as pool:  # as saq.Worker.stop: a fresh pool
                    for shutdown in ensure_coroutine_function_many(worker.shutdown, pool):
                        await shutdown(worker.context)
        for worker in self.workers.values():
            if self.url:
                with contextlib.suppress(Exception):  # closing must not hide the outcome
                    await worker.queue.disconnect()
        self.workers = {}
        failed = list(self.hooks.failed_shutdown_hooks) if self.hooks is not None else []
        if failed and raise_errors:
            raise HookError(
                f"shutdown hook(s) {', '.join(failed)} raised (the traceback is in the log "
                "of the 'domainjobs' logger)"
            )

    def _binder(self, spec: TaskSpec) -> Binder:
        binder = self._binders.get(spec.name)
        if binder is None:
            binder = self._binders[spec.name] = Binder.for_spec(spec)
        return binder

    def job_for(self, spec: TaskSpec, kwargs: dict[str, Any]) -> Job:
        """The ``saq.Job`` of one direct call, as a worker holds it once it has taken it."""
        worker = self.workers[spec.queue]
        job = Job(function=spec.name, kwargs=kwargs, queue=worker.queue, **dict(spec.options))
        job.status = Status.ACTIVE
        job.attempts = 1
        job.queued = job.started = job.touched = now()
        job.worker_id = str(worker.id)
        return job

    @overload
    async def run(
        self,
        task: Callable[Concatenate[Any, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...
    @overload
    async def run(
        self, task: Callable[Concatenate[Any, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    @overload
    async def run(self, task: str, /, *args: Any, **kwargs: Any) -> Any: ...
    async def run(self, task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``task`` (public name or function) once and return its result; its
        exception, if it raised, propagates unchanged (``TimeoutError`` past its timeout)."""
        if not self.workers:
            raise DomainJobsError(
                "TaskRunner is not started: use `async with TaskRunner(...) as runner:`"
            )
        spec = self.registry.task(task)
        bound = self._binder(spec).bind(args, kwargs)
        worker = self.workers[spec.queue]
        dump, load = dump_function(worker.queue), load_function(worker.queue)
        check_serializable(spec.name, bound, dump)
        delivered = load(dump(bound))
        job = self.job_for(spec, delivered)
        context: dict[str, Any] = {**worker.context, "job": job}
        for before in worker.before_process or ():
            await before(context)
        function = ensure_coroutine_function(worker.functions[spec.name], worker.pool)
        try:
            result = await asyncio.wait_for(function(context, **delivered), job.timeout or None)
        except Exception as exc:
            context["exception"] = exc
            raise
        finally:
            for after in worker.after_process or ():
                await after(context)
        try:
            return load(dump(result))
        except Exception as exc:  # any serializer failure: the task's value
            raise UnserializableResultError(
                f"task {spec.name!r} returned {type(result).__name__} value that the queue's "
                f"serializer cannot store ({exc}): a worker would fail this job; return plain "
                "JSON values"
            ) from None


async def run_task(task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one task directly with the configured roots and no broker: startup hooks,
    the task, shutdown hooks. Return its result or raise its exception.

    For other roots, a broker, or several calls in one context, use ``TaskRunner``.
    """
    async with TaskRunner() as runner:
        return await runner.run(task, *args, **kwargs)
