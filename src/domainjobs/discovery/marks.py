"""The decorators users put on their job functions: ``@task``, ``@cron``, ``@on_startup``,
``@on_shutdown``.

A mark never wraps the function: it stores a small record on it and returns the very same
function, so a task stays callable (and testable) as plain Python and costs nothing per job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from typing_extensions import Unpack

from domainjobs.options import CronOptions, TaskOptions

F = TypeVar("F", bound=Callable[..., Any])

MARK_ATTRIBUTE = "__domainjobs__"


@dataclass(frozen=True)
class Mark:
    """What a decorator recorded on a function."""

    kind: Literal["task", "cron", "startup", "shutdown"]
    name: str | None = None
    queue: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    unique: bool = True
    cron_kwargs: dict[str, Any] | None = None


def get_mark(obj: object) -> Mark | None:
    """Return the domainjobs mark of ``obj``, if it has one."""
    mark = getattr(obj, MARK_ATTRIBUTE, None)
    return mark if isinstance(mark, Mark) else None


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _apply(function: F, mark: Mark) -> F:
    if not callable(function):
        raise TypeError(f"@{mark.kind} must decorate a function, got {function!r}")
    setattr(function, MARK_ATTRIBUTE, mark)
    return function


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
        return _apply(function, mark)
    return lambda f: _apply(f, mark)


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
    return lambda f: _apply(f, mark)


def on_startup(function: F, /) -> F:
    """Mark a hook to run once when a worker process starts (receives the worker context)."""
    return _apply(function, Mark(kind="startup"))


def on_shutdown(function: F, /) -> F:
    """Mark a hook to run once when a worker process stops (receives the worker context)."""
    return _apply(function, Mark(kind="shutdown"))
