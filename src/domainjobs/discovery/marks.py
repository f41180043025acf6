"""The decorators users put on their job functions: ``@task``, ``@cron``, ``@on_startup``,
``@on_shutdown``, ``@before_job``, ``@after_job``.

A mark never wraps the function: it stores a small record on it and returns the very same
function, so a task stays callable (and testable) as plain Python and costs nothing per job.

Each mark also remembers the module it was applied in, so a mark written as a statement
(``on_startup(helpers.open_pool)``, the function defined and bound elsewhere) still
belongs to the jobs module that wrote it (``marked_in``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from typing_extensions import Unpack

from domainjobs.options import CronOptions, TaskOptions

F = TypeVar("F", bound=Callable[..., Any])

MARK_ATTRIBUTE = "__domainjobs__"

MarkKind = Literal["task", "cron", "startup", "shutdown", "before_job", "after_job"]

#: module name -> the functions marked by code running in that module, in order
_MARKED_IN: dict[str, list[Callable[..., Any]]] = {}


@dataclass(frozen=True)
class Mark:
    """What a decorator recorded on a function."""

    kind: MarkKind
    name: str | None = None
    queue: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    unique: bool = True
    cron_kwargs: dict[str, Any] | None = None
    #: a ``before_job``/``after_job`` hook: run around every task, not only its domain's
    all_domains: bool = False


def get_mark(obj: object) -> Mark | None:
    """Return the domainjobs mark of ``obj``, if it has one."""
    mark = getattr(obj, MARK_ATTRIBUTE, None)
    return mark if isinstance(mark, Mark) else None


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _caller_module(depth: int) -> str | None:
    """The ``__name__`` of the module whose code is ``depth`` frames above the caller."""
    try:
        return sys._getframe(depth + 1).f_globals.get("__name__")
    except ValueError:  # pragma: no cover - a shallower stack than expected
        return None


def _apply(function: F, mark: Mark, module: str | None) -> F:
    if not callable(function):
        raise TypeError(f"@{mark.kind} must decorate a function, got {function!r}")
    setattr(function, MARK_ATTRIBUTE, mark)
    if module is not None:
        _MARKED_IN.setdefault(module, []).append(function)
    return function


def marked_in(module_name: str) -> list[Callable[..., Any]]:
    """The functions marked by code of module ``module_name`` (bound there or not)."""
    return list(_MARKED_IN.get(module_name, ()))


@overload
def task(function: F, /) -> F: ...
@overload
def task(
    *, name: str | None = None, queue: str | None = None, **options: Unpack[TaskOptions]
) -> Callable[[F], F]: ...
def task(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    **options: Unpack[TaskOptions],
) -> F | Callable[[F], F]:
    """Mark a function as an on-demand task of its domain.

    Usable bare (``@task``) or with options (``@task(queue="mail", timeout=30)``). The
    options (``timeout``, ``retries``, ``ttl``, ``heartbeat``, ``retry_delay``,
    ``retry_backoff``: see ``domainjobs.options.OPTIONS``) are SAQ job defaults applied when
    the task is enqueued through domainjobs; ``name`` replaces the public name
    ``"<domain>.<function>"``. Unknown or badly typed options are reported by discovery.
    """
    mark = Mark(kind="task", name=name, queue=queue, options=_options(options))
    if function is not None:
        return _apply(function, mark, _caller_module(1))
    return lambda f: _apply(f, mark, _caller_module(1))


def cron(
    expression: str,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    unique: bool = True,
    kwargs: dict[str, Any] | None = None,
    **options: Unpack[CronOptions],
) -> Callable[[F], F]:
    """Schedule a function with a cron expression (UTC unless ``cron_tz`` is configured).

    The function is also a task of its domain, so it can be enqueued by hand. ``unique``
    (default true) makes every worker agree on one job per tick, as SAQ's ``CronJob`` does.
    The options (``timeout``, ``retries``, ``ttl``, ``heartbeat``) are those of SAQ's
    ``CronJob``.
    """
    mark = Mark(
        kind="cron",
        name=name,
        queue=queue,
        cron=expression,
        unique=unique,
        cron_kwargs=kwargs,
        options=_options(options),
    )
    return lambda f: _apply(f, mark, _caller_module(1))


def on_startup(function: F, /) -> F:
    """Mark a hook to run once when a worker process starts (receives the worker context).

    Usable as a decorator or as a statement on a function defined elsewhere
    (``on_startup(db.open_pool)``): either way it belongs to the domain that wrote it.
    """
    return _apply(function, Mark(kind="startup"), _caller_module(1))


def on_shutdown(function: F, /) -> F:
    """Mark a hook to run once when a worker process stops (receives the worker context)."""
    return _apply(function, Mark(kind="shutdown"), _caller_module(1))


@overload
def before_job(function: F, /, *, all_domains: bool = False) -> F: ...
@overload
def before_job(*, all_domains: bool = False) -> Callable[[F], F]: ...
def before_job(function: F | None = None, /, *, all_domains: bool = False) -> F | Callable[[F], F]:
    """Mark a hook to run before each job (SAQ's ``before_process``; receives the job's
    context, ``ctx["job"]`` among it).

    It runs before the jobs of its own domain's tasks, or before every job with
    ``all_domains=True`` (for app-wide logging context, say). Usable bare, with the
    option, or as a statement: ``before_job(worker.before_process, all_domains=True)``.
    """
    mark = Mark(kind="before_job", all_domains=all_domains)
    if function is not None:
        return _apply(function, mark, _caller_module(1))
    return lambda f: _apply(f, mark, _caller_module(1))


@overload
def after_job(function: F, /, *, all_domains: bool = False) -> F: ...
@overload
def after_job(*, all_domains: bool = False) -> Callable[[F], F]: ...
def after_job(function: F | None = None, /, *, all_domains: bool = False) -> F | Callable[[F], F]:
    """Mark a hook to run after each job ends (SAQ's ``after_process``): after its own
    domain's jobs, or every job with ``all_domains=True``. ``ctx["job"].status`` says how
    the job ended."""
    mark = Mark(kind="after_job", all_domains=all_domains)
    if function is not None:
        return _apply(function, mark, _caller_module(1))
    return lambda f: _apply(f, mark, _caller_module(1))
