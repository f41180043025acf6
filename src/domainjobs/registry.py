"""The immutable catalogue discovery produces: tasks, cron jobs, hooks, queues, domains."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from domainjobs.errors import Problem, UnknownTaskError

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Origin:
    """Where a discovered thing was defined."""

    domain: str
    module: str
    file: str | None
    line: int | None

    def __str__(self) -> str:
        if self.file:
            return f"{self.file}:{self.line}" if self.line else self.file
        return self.module


@dataclass(frozen=True)
class Domain:
    """A package under a domains root that has a ``jobs`` module or package."""

    name: str
    package: str
    jobs_module: str
    queue: str
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """An on-demand task: its public name, function, queue and job defaults."""

    name: str
    function: Callable[..., Any]
    domain: str
    queue: str
    options: Mapping[str, Any]
    origin: Origin
    signature: inspect.Signature

    @property
    def is_async(self) -> bool:
        """True for ``async def`` tasks (plain ones run in SAQ's thread pool)."""
        return inspect.iscoroutinefunction(self.function)


@dataclass(frozen=True, eq=False)
class CronSpec:
    """A cron schedule for a task."""

    task: TaskSpec
    cron: str
    unique: bool
    kwargs: Mapping[str, Any] | None
    options: Mapping[str, Any]
    origin: Origin

    @property
    def name(self) -> str:
        """The public name of the scheduled task."""
        return self.task.name

    @property
    def queue(self) -> str:
        """The queue the scheduled task runs on."""
        return self.task.queue


@dataclass(frozen=True, eq=False)
class HookSpec:
    """A startup, shutdown, before-job or after-job hook. A before/after-job hook runs
    around its own domain's jobs, or every job when ``all_domains``."""

    kind: str
    name: str
    function: Callable[..., Any]
    domain: str
    origin: Origin
    all_domains: bool = False


@dataclass(frozen=True, eq=False)
class Registry:
    """Everything discovery found, in a stable order. Build it with ``domainjobs.discover``."""

    domains: tuple[Domain, ...] = ()
    tasks: Mapping[str, TaskSpec] = field(default_factory=dict)
    crons: tuple[CronSpec, ...] = ()
    startup: tuple[HookSpec, ...] = ()
    shutdown: tuple[HookSpec, ...] = ()
    roots: tuple[str, ...] = ()
    #: hooks around each job (SAQ's before_process/after_process), in the order they run
    before_job: tuple[HookSpec, ...] = ()
    after_job: tuple[HookSpec, ...] = ()
    #: things ``check`` warns about that do not stop a worker (a domain with no jobs)
    warnings: tuple[Problem, ...] = ()
    _by_function: dict[int, TaskSpec] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", MappingProxyType(dict(self.tasks)))
        by_function = {id(spec.function): spec for spec in self.tasks.values()}
        object.__setattr__(self, "_by_function", by_function)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue a task or cron job is routed to, sorted by name."""
        return tuple(sorted({spec.queue for spec in self.tasks.values()}))

    def task(self, name_or_function: str | Callable[..., Any]) -> TaskSpec:
        """Look a task up by public name or by function; raise ``UnknownTaskError``."""
        if isinstance(name_or_function, str):
            try:
                return self.tasks[name_or_function]
            except KeyError:
                raise UnknownTaskError(name_or_function, self.tasks) from None
        spec = self._by_function.get(id(name_or_function))
        if spec is not None and spec.function is name_or_function:
            return spec
        label = getattr(name_or_function, "__qualname__", repr(name_or_function))
        raise UnknownTaskError(label, self.tasks)

    def tasks_for(self, queue: str) -> tuple[TaskSpec, ...]:
        """The tasks routed to ``queue``."""
        return tuple(spec for spec in self.tasks.values() if spec.queue == queue)

    def crons_for(self, queue: str) -> tuple[CronSpec, ...]:
        """The cron jobs routed to ``queue``."""
        return tuple(spec for spec in self.crons if spec.queue == queue)

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self.tasks.values())

    def __len__(self) -> int:
        return len(self.tasks)


#: What ``build_worker``, ``Jobs`` and friends accept: a registry, or the roots to discover
#: (``None``: the configured roots).
RegistryOrRoots = Registry | str | Sequence[str] | None
