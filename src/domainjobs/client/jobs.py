"""``Jobs``: enqueue discovered tasks from any Python code, by public name or by function.

```python
async with Jobs("app.domain", url="redis://localhost:6379") as jobs:
    handle = await jobs.enqueue(send_welcome_email, user_id=1)      # checked by mypy
    address = await handle.result(timeout=5)
    text = await jobs.with_options(timeout=60, key="inv-7").apply("billing.charge", invoice_id=7)
```

The task's own arguments and the job's options never share a namespace: arguments go to
``enqueue``/``apply``, options to ``with_options`` (which returns a view of the same
connected facade). Everything is validated before anything reaches the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from saq.job import Job, Status
from saq.queue import Queue
from typing_extensions import Self, Unpack

from domainjobs.brokers.batch import enqueue_jobs
from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.client.arguments import Binder, check_serializable, dump_function, plain_values
from domainjobs.client.handle import JobHandle
from domainjobs.client.pending import Pending, PendingList, PendingListWithErrors
from domainjobs.client.reach import is_unreachable, reports_unreachable, unreachable_at_url
from domainjobs.client.status import QueueStatus, queue_status
from domainjobs.client.waiting import (
    CompletionListener,
    has_notifications,
    listener_for,
    wait_for_job,
)
from domainjobs.discovery.builder import resolve_registry
from domainjobs.errors import (
    BrokerUnreachableError,
    DomainJobsError,
    DuplicateKeyError,
    JobFailedError,
    JobTimeoutError,
    TaskArgumentsError,
)
from domainjobs.observability import state as observed
from domainjobs.options import NO_OPTIONS, CallOptions, JobOptions
from domainjobs.registry import Registry, TaskSpec

P = ParamSpec("P")
R = TypeVar("R")

RegistryOrRoots = Registry | str | Sequence[str] | None
TaskRef = str | Callable[..., Any]


class _State:
    """What every view of one facade shares: registry, broker, queues, caches."""

    def __init__(self, registry_or_roots: RegistryOrRoots, url: str | None) -> None:
        self.registry_or_roots = registry_or_roots
        self.given_url = url
        self.registry: Registry | None = None
        self.url: str | None = None
        self.queues: dict[str, Queue] = {}
        self.listeners: dict[str, CompletionListener] = {}
        self.specs: dict[Any, TaskSpec] = {}
        self.binders: dict[str, Binder] = {}
        self.dumps: dict[str, Callable[[Any], Any]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.open = False
        self.users = 0


class Jobs:
    """The queue facade: an async context manager over the discovered tasks' queues.

    ``registry_or_roots`` is a ``Registry`` or domains roots to discover (default: the
    configured roots); ``url`` the broker (default: the configured one). Each queue is
    connected on first use and disconnected when the context exits.
    """

    def __init__(
        self,
        registry_or_roots: RegistryOrRoots = None,
        *,
        url: str | None = None,
        options: JobOptions | None = None,
    ) -> None:
        self._state = _State(registry_or_roots, url)
        self._options = options or NO_OPTIONS
        self._fields: dict[str, dict[str, Any]] = {}

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
        await self.close()

    async def open(self) -> None:
        """Resolve the registry and broker URL (queues connect on first use)."""

        state = self._state
        if state.registry is None:
            state.registry = resolve_registry(state.registry_or_roots)
        if state.url is None:
            state.url = resolve_url(state.given_url)
        state.users += 1
        state.open = True

    async def close(self) -> None:
        """Unsubscribe and disconnect every queue this facade connected."""
        state = self._state
        state.users = max(state.users - 1, 0)
        if state.users:
            return
        state.open = False
        for listener in state.listeners.values():
            await listener.close()
        state.listeners.clear()
        for queue in state.queues.values():
            with contextlib.suppress(Exception):
                await queue.disconnect()
        state.queues.clear()

    def _unreachable(self, exc: BaseException) -> BrokerUnreachableError:
        return unreachable_at_url(self._state.url or "", exc)

    @property
    def registry(self) -> Registry:
        """The registry (discovered on first use when roots were given)."""
        state = self._state
        if state.registry is None:
            state.registry = resolve_registry(state.registry_or_roots)
        return state.registry

    @property
    def url(self) -> str | None:
        """The broker URL (resolved from the configuration once the facade is open)."""
        return self._state.url or self._state.given_url

    @property
    def options(self) -> JobOptions:
        """The job options this view applies."""
        return self._options

    def with_options(self, **options: Unpack[CallOptions]) -> Jobs:
        """A view of this facade whose jobs get these options (over the task's defaults).

        It shares the connections: ``jobs.with_options(timeout=5, key="k").enqueue(...)``.
        The options are ``JobOptions``' fields (``domainjobs.options.OPTIONS`` lists them
        with what each does). They are validated here, once; ``JobOptionsError`` says which
        one is wrong.
        """
        extra = JobOptions(**options)  # an unknown option: TypeError, as for any call
        view = Jobs.__new__(Jobs)
        view._state = self._state
        view._options = self._options.merged(extra)
        view._fields = {}
        return view

    # -- lookups -------------------------------------------------------------------------

    def spec(self, task: TaskRef) -> TaskSpec:
        """The discovered task for a public name or function (``UnknownTaskError``)."""
        specs = self._state.specs
        try:
            return specs[task]
        except KeyError:
            spec = specs[task] = self.registry.task(task)
            return spec
        except TypeError:  # unhashable
            return self.registry.task(task)

    def _binder(self, spec: TaskSpec) -> Binder:
        binders = self._state.binders
        binder = binders.get(spec.name)
        if binder is None:
            binder = binders[spec.name] = Binder.for_spec(spec)
        return binder

    def _job_fields(self, spec: TaskSpec) -> dict[str, Any]:
        fields = self._fields.get(spec.name)
        if fields is None:
            fields = {**spec.options, **self._options.job_fields()}
            if not self._options.per_call:
                self._fields[spec.name] = fields
        return fields

    async def queue(self, name: str) -> Queue:
        """The connected SAQ queue ``name`` (connected on first use)."""
        state = self._state
        queue = state.queues.get(name)
        if queue is not None:
            return queue
        if not state.open:
            raise DomainJobsError(
                "Jobs is not open: use `async with Jobs(...) as jobs:` or the ASGI lifespan "
                "helper domainjobs.lifespan.jobs_lifespan"
            )
        lock = state.locks.setdefault(name, asyncio.Lock())
        async with lock:
            queue = state.queues.get(name)
            if queue is None:
                assert state.url is not None
                queue = queue_from_url(state.url, name)
                await queue.connect()
                state.queues[name] = queue
                state.dumps[name] = dump_function(queue)
        return queue

    async def _listener(self, queue: Queue) -> CompletionListener | None:
        if not has_notifications(queue):
            return None
        listener = self._state.listeners.get(queue.name)
        if listener is None:
            listener = self._state.listeners[queue.name] = listener_for(queue)
        await listener.start()
        return listener

    # -- enqueueing ----------------------------------------------------------------------

    def _prepare(
        self, task: TaskRef, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[TaskSpec, dict[str, Any]]:
        spec = self.spec(task)
        return spec, self._binder(spec).bind(args, kwargs)

    async def _submit(
        self, spec: TaskSpec, bound: dict[str, Any], watch: bool, checked: bool = False
    ) -> tuple[JobHandle[Any], asyncio.Future[str] | None, CompletionListener | None]:
        queue = self._state.queues.get(spec.queue) or await self.queue(spec.queue)
        if not checked and not plain_values(bound):
            check_serializable(spec.name, bound, self._state.dumps[queue.name])
        fields = self._job_fields(spec)
        listener = await self._listener(queue) if watch else None
        for _attempt in range(3):
            job = Job(function=spec.name, kwargs=bound, **fields)
            future = listener.watch(queue.job_id(job.key)) if listener is not None else None
            try:
                publish = observed.PUBLISH  # set while tracing is on
                enqueued = await (
                    queue.enqueue(job) if publish is None else publish(queue, job, spec)
                )
            except BaseException:
                if listener is not None and future is not None:
                    listener.unwatch(queue.job_id(job.key), future)
                raise
            if enqueued is not None:
                return JobHandle(self, enqueued, created=True), future, listener
            existing = await queue.job(job.key)
            if existing is None:  # finished and deleted meanwhile: enqueue again
                if listener is not None and future is not None:
                    listener.unwatch(queue.job_id(job.key), future)
                continue
            if existing.function != spec.name:
                if listener is not None and future is not None:
                    listener.unwatch(queue.job_id(job.key), future)
                raise DuplicateKeyError(
                    f"key {job.key!r} is already used by a queued job of task "
                    f"{existing.function!r} on queue {queue.name!r}; use another key"
                )
            return JobHandle(self, existing, created=False), future, listener
        raise DomainJobsError(f"could not enqueue {spec.name!r} with key {fields.get('key')!r}")

    @overload
    async def enqueue(
        self, task: Callable[Concatenate[Any, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> JobHandle[R]: ...
    @overload
    async def enqueue(self, task: str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]: ...
    async def enqueue(self, task: TaskRef, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Enqueue ``task`` (public name or function) with its arguments; return a handle.

        With a ``key`` option and a job of that key already queued, scheduled or running,
        the existing job's handle is returned (``handle.created`` is False): the task
        never runs twice for one key.
        """
        spec, bound = self._prepare(task, args, kwargs)
        try:
            queue = self._state.queues.get(spec.queue) or await self.queue(spec.queue)
            if not plain_values(bound):
                check_serializable(spec.name, bound, self._state.dumps[queue.name])
            # the common case inline (one coroutine less); keys and waiters go through _submit
            job = Job(function=spec.name, kwargs=bound, **self._job_fields(spec))
            publish = observed.PUBLISH  # set while tracing is on
            enqueued = await (queue.enqueue(job) if publish is None else publish(queue, job, spec))
            if enqueued is not None:
                return JobHandle(self, enqueued)
            handle, _, _ = await self._submit(spec, bound, watch=False, checked=True)
        except Exception as exc:  # inline, not the decorator: the hot path pays nothing
            if not is_unreachable(exc):
                raise
            raise self._unreachable(exc) from exc
        return handle

    @overload
    async def enqueue_many(
        self, task: Callable[..., R], kwargs_list: Iterable[Mapping[str, Any]], /
    ) -> list[JobHandle[R]]: ...
    @overload
    async def enqueue_many(
        self, task: str, kwargs_list: Iterable[Mapping[str, Any]], /
    ) -> list[JobHandle[Any]]: ...
    @reports_unreachable
    async def enqueue_many(
        self, task: TaskRef, kwargs_list: Iterable[Mapping[str, Any]], /
    ) -> list[JobHandle[Any]]:
        """Enqueue one job of ``task`` per mapping of keyword arguments; return their
        handles, in order: ``await jobs.enqueue_many(f, [{"x": 1}, {"x": 2}])``.

        Every item is checked first (task, arguments, serializer): one bad item raises
        and nothing is enqueued. Then the jobs go out in pipelined chunks of 500 on Redis
        (one round trip each), one by one on PostgreSQL. Not atomic: if the broker fails
        part-way, the chunks already sent stay enqueued. A ``key`` option is refused (one
        key cannot name many jobs).
        """
        if self._options.key is not None:
            raise TaskArgumentsError(
                "enqueue_many enqueues many jobs, so it cannot take one key option; "
                "use enqueue per key"
            )
        spec = self.spec(task)
        bound_list = await self._bind_all(spec, kwargs_list, "enqueue_many")
        queue = await self.queue(spec.queue)
        fields = self._job_fields(spec)
        jobs = [Job(function=spec.name, kwargs=bound, **fields) for bound in bound_list]
        enqueued = await enqueue_jobs(queue, jobs)
        handles: list[JobHandle[Any]] = []
        for bound, job in zip(bound_list, enqueued, strict=True):
            if job is not None:
                handles.append(JobHandle(self, job))
            else:  # its random key was taken: the one-job path sorts that out
                handle, _, _ = await self._submit(spec, bound, watch=False, checked=True)
                handles.append(handle)
        return handles

    @overload
    def apply(
        self, task: Callable[Concatenate[Any, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Pending[R]: ...
    @overload
    def apply(self, task: str, /, *args: Any, **kwargs: Any) -> Pending[Any]: ...
    def apply(self, task: TaskRef, /, *args: Any, **kwargs: Any) -> Pending[Any]:
        """Enqueue ``task`` and wait for its result: ``await jobs.apply(f, x=1)``.

        ``with_options(wait_timeout=...)`` bounds the wait (``JobTimeoutError``); a failed
        or aborted job raises ``JobFailedError``. Nothing happens until it is awaited.
        """
        return Pending(lambda: self._apply(task, args, kwargs))

    @reports_unreachable
    async def _apply(self, task: TaskRef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        spec, bound = self._prepare(task, args, kwargs)
        handle, future, listener = await self._submit(spec, bound, watch=True)
        job = await self._wait(
            handle.job, self._options.wait_timeout, listener, future, check_first=not handle.created
        )
        if job.status != Status.COMPLETE:
            raise JobFailedError(job)
        return job.result

    @overload
    def map(
        self,
        task: Callable[..., R],
        kwargs_list: Iterable[Mapping[str, Any]],
        /,
        *,
        return_exceptions: Literal[False] = False,
    ) -> PendingList[R]: ...
    @overload
    def map(
        self,
        task: Callable[..., R],
        kwargs_list: Iterable[Mapping[str, Any]],
        /,
        *,
        return_exceptions: Literal[True],
    ) -> PendingListWithErrors[R]: ...
    @overload
    def map(
        self,
        task: str,
        kwargs_list: Iterable[Mapping[str, Any]],
        /,
        *,
        return_exceptions: bool = False,
    ) -> PendingList[Any]: ...
    def map(
        self,
        task: TaskRef,
        kwargs_list: Iterable[Mapping[str, Any]],
        /,
        *,
        return_exceptions: bool = False,
    ) -> PendingList[Any] | PendingListWithErrors[Any]:
        """Enqueue one job per kwargs mapping and return their results in order:
        ``await jobs.map(f, [{"x": 1}, {"x": 2}])``.

        Every mapping is validated before any job is enqueued. A failed job raises
        ``JobFailedError`` (the others go on), or with ``return_exceptions=True`` its error
        takes its place in the list.
        """
        items = list(kwargs_list)
        if return_exceptions:
            return PendingListWithErrors(lambda: self._map(task, items, True))
        return PendingList(lambda: self._map(task, items, False))

    @reports_unreachable
    async def _map(
        self, task: TaskRef, kwargs_list: list[Mapping[str, Any]], return_exceptions: bool
    ) -> list[Any]:
        if self._options.key is not None:
            raise TaskArgumentsError(
                "map enqueues many jobs, so it cannot take one key option; use enqueue per key"
            )
        spec = self.spec(task)
        bound_list = await self._bind_all(spec, kwargs_list, "map")
        submitted = await asyncio.gather(
            *(self._submit(spec, bound, watch=True, checked=True) for bound in bound_list)
        )
        waits = [
            asyncio.ensure_future(
                self._wait(handle.job, None, listener, future, check_first=not handle.created)
            )
            for handle, future, listener in submitted
        ]
        try:
            done = await self._gather(waits, self._options.wait_timeout, return_exceptions)
        finally:
            for waiter in waits:
                waiter.cancel()
        results: list[Any] = []
        for job in done:
            results.append(job.result if job.status == Status.COMPLETE else JobFailedError(job))
        return results

    async def _bind_all(
        self, spec: TaskSpec, kwargs_list: Iterable[Mapping[str, Any]], what: str
    ) -> list[dict[str, Any]]:
        """Every item bound to ``spec``'s signature and checked by its queue's serializer;
        the first bad item raises, naming its index (nothing is enqueued then)."""
        binder = self._binder(spec)
        queue = await self.queue(spec.queue)
        dump = self._state.dumps[queue.name]
        bound_list = []
        for index, kwargs in enumerate(kwargs_list):
            try:
                if not isinstance(kwargs, Mapping):
                    raise TaskArgumentsError(
                        f"each item must be a mapping of keyword arguments for {spec.name!r}, "
                        f"got {type(kwargs).__name__}"
                    )
                bound = binder.bind((), kwargs)
                if not plain_values(bound):
                    check_serializable(spec.name, bound, dump)
            except DomainJobsError as exc:
                raise type(exc)(f"{what} item {index}: {exc}") from None
            bound_list.append(bound)
        return bound_list

    @staticmethod
    async def _gather(
        waits: Sequence[asyncio.Future[Job]], timeout: float | None, return_exceptions: bool
    ) -> list[Job]:
        pending = set(waits)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while pending:
            remaining = None if deadline is None else max(deadline - loop.time(), 0)
            finished, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not finished:
                raise JobTimeoutError(f"{len(pending)} of {len(waits)} jobs did not finish in time")
            for waiter in finished:
                job = waiter.result()
                if job.status != Status.COMPLETE and not return_exceptions:
                    raise JobFailedError(job)
        return [waiter.result() for waiter in waits]

    # -- waiting, lookup, abort, info ----------------------------------------------------

    async def _wait(
        self,
        job: Job,
        timeout: float | None,
        listener: CompletionListener | None,
        future: asyncio.Future[str] | None,
        *,
        check_first: bool,
    ) -> Job:
        queue = job.get_queue()
        try:
            return await wait_for_job(
                queue, job.key, listener, future, timeout, check_first=check_first
            )
        except TimeoutError:
            raise JobTimeoutError(
                f"job {job.key!r} of task {job.function!r} did not finish within {timeout}s "
                "(it goes on; wait again with handle.result())"
            ) from None

    @reports_unreachable
    async def wait_for(self, job: Job, timeout: float | None = None) -> Job:
        """Wait until a SAQ job is complete, failed or aborted, and return it."""
        queue = job.get_queue()
        listener = await self._listener(queue)
        future = listener.watch(queue.job_id(job.key)) if listener is not None else None
        return await self._wait(job, timeout, listener, future, check_first=True)

    @reports_unreachable
    async def job(
        self, key: str, *, task: TaskRef | None = None, queue: str | None = None
    ) -> JobHandle[Any] | None:
        """The job with ``key`` on the queue of ``task`` (or ``queue``; default: look in
        every queue of the registry), or None."""
        if task is not None:
            names: Sequence[str] = [self.spec(task).queue]
        elif queue is not None:
            names = [queue]
        else:
            names = self.registry.queues
        for name in names:
            found = await (await self.queue(name)).job(key)
            if found is not None:
                return JobHandle(self, found, created=False)
        return None

    @reports_unreachable
    async def abort(
        self,
        key_or_handle: str | JobHandle[Any],
        *,
        task: TaskRef | None = None,
        queue: str | None = None,
        reason: str = "aborted",
    ) -> bool:
        """Abort a job (a queued one never runs; a running one is cancelled). Returns False
        when no such job exists."""
        if isinstance(key_or_handle, JobHandle):
            await key_or_handle.abort(reason)
            return True
        handle = await self.job(key_or_handle, task=task, queue=queue)
        if handle is None:
            return False
        await handle.abort(reason)
        return True

    @reports_unreachable
    async def status(self, queues: Sequence[str] | None = None) -> list[QueueStatus]:
        """Queued/active/scheduled/failed counts and live workers of each queue
        (default: every queue of the registry)."""
        names = list(queues) if queues else list(self.registry.queues) or ["default"]
        return [await queue_status(await self.queue(name)) for name in names]

    @reports_unreachable
    async def info(self, queue: str, *, jobs: bool = False) -> dict[str, Any]:
        """SAQ's own ``Queue.info`` of one queue (workers, counts, optionally jobs)."""
        return dict(await (await self.queue(queue)).info(jobs=jobs))
