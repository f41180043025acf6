"""The rules of what counts as what inside one jobs module (docs/discovery.md).

- A marked function (``@task``, ``@cron``, ``@on_startup``, ``@on_shutdown``,
  ``@before_job``, ``@after_job``) counts wherever it stands in a domain's jobs modules, and
  so does a function a jobs module marks with a statement (``on_startup(db.open)``).
- Without task marks, a module's tasks are the names in its ``__all__``, or failing that its
  public functions defined in that very module (re-exports are not registered twice).
- ``scheduled`` modules register only marked functions and ``scheduled_tasks`` entries:
  their other functions are helpers. ``startup``/``shutdown`` modules follow the task rule
  for their hooks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from domainjobs.discovery.loader import display_path
from domainjobs.discovery.marks import Mark, get_mark, marked_in
from domainjobs.errors import Problem

#: What unmarked functions of a module count as.
Fallback = Literal["task", "startup", "shutdown", None]

TASK_KINDS = ("task", "cron")


@dataclass
class Found:
    """Functions one module contributes, each with the module it was found in."""

    marked: list[tuple[Callable[..., Any], Mark]] = field(default_factory=list)
    unmarked: list[Callable[..., Any]] = field(default_factory=list)
    scheduled_tasks: list[tuple[int, object]] = field(default_factory=list)


def line_of(function: object) -> int | None:
    """First line of a function's definition, when Python knows it."""
    code = getattr(inspect.unwrap(function), "__code__", None)  # type: ignore[arg-type]
    return code.co_firstlineno if code is not None else None


def _definition_order(item: Callable[..., Any]) -> tuple[str, int]:
    return (getattr(item, "__module__", "") or "", line_of(item) or 0)


def package_owner(module_name: str, packages: Container[str]) -> str | None:
    """The shortest of ``module_name`` and its parent packages that is in ``packages``.

    One lookup per dotted part of the name, however many packages there are.
    """
    parts = module_name.split(".")
    for end in range(1, len(parts) + 1):
        candidate = ".".join(parts[:end])
        if candidate in packages:
            return candidate
    return None


def select(
    module: ModuleType,
    fallback: Fallback,
    *,
    domain: str,
    foreign_packages: Container[str],
    problems: list[Problem],
) -> Found:
    """Apply the selection rules to ``module``.

    ``foreign_packages`` are the packages of the other domains: a marked function defined
    there belongs to that domain, not to this one, even if this module imports it.
    """
    found = Found()
    namespace = vars(module)
    seen: set[int] = set()
    for value in namespace.values():
        mark = get_mark(value)
        if mark is None or id(value) in seen:
            continue
        owner = getattr(value, "__module__", "") or ""
        if package_owner(owner, foreign_packages) is not None:
            continue
        seen.add(id(value))
        found.marked.append((value, mark))
    for value in marked_in(module.__name__):  # marked here by a statement, bound elsewhere
        mark = get_mark(value)
        if mark is not None and id(value) not in seen:
            seen.add(id(value))
            found.marked.append((value, mark))
    found.marked.sort(key=lambda item: _definition_order(item[0]))

    marked_kinds = {mark.kind for _, mark in found.marked}
    wanted_kinds = TASK_KINDS if fallback == "task" else (fallback,)
    if fallback is not None and not marked_kinds.intersection(wanted_kinds):
        found.unmarked = _unmarked(module, domain, seen, problems)

    scheduled = namespace.get("scheduled_tasks")
    if scheduled is not None:
        if isinstance(scheduled, (list, tuple)):
            found.scheduled_tasks = list(enumerate(scheduled))
        else:
            problems.append(
                Problem(
                    "scheduled_tasks must be a list of saq.CronJob, got "
                    f"{type(scheduled).__name__}",
                    domain=domain,
                    file=display_path(getattr(module, "__file__", None)),
                )
            )
    return found


def _unmarked(
    module: ModuleType, domain: str, marked_ids: set[int], problems: list[Problem]
) -> list[Callable[..., Any]]:
    namespace = vars(module)
    file = display_path(getattr(module, "__file__", None))
    exported = namespace.get("__all__")
    result: list[Callable[..., Any]] = []
    if exported is not None:
        for name in exported:
            if name not in namespace:
                problems.append(
                    Problem(
                        f"__all__ of {module.__name__} names {name!r}, which the module does "
                        "not define; remove it from __all__ or define it",
                        domain=domain,
                        file=file,
                    )
                )
            elif not callable(namespace[name]):
                problems.append(
                    Problem(
                        f"__all__ of {module.__name__} names {name!r}, which is not a function "
                        f"(it is of type {type(namespace[name]).__name__}); list only job "
                        "functions in __all__ (or mark them with @task)",
                        domain=domain,
                        file=file,
                    )
                )
            elif id(namespace[name]) not in marked_ids:
                result.append(namespace[name])
        return result
    for name, value in namespace.items():
        if (
            not name.startswith("_")
            and inspect.isfunction(value)
            and value.__module__ == module.__name__
            and id(value) not in marked_ids
        ):
            result.append(value)
    result.sort(key=_definition_order)
    return result


#: Words that, in a first parameter's name or annotation, say "this is the worker context".
CONTEXT_NAMES = ("ctx", "context")
CONTEXT_ANNOTATIONS = ("context", "dict", "mapping", "any")


def looks_like_context(name: str, annotation: object) -> bool:
    """Whether a first parameter is meant to receive SAQ's context: its name is ``ctx``,
    ``context``, ends with one of them (``job_ctx``) or starts with ``_`` (unused), or its
    annotation names a context, dict, mapping or ``Any`` (``saq.types.Context``)."""
    lowered = name.lower()
    if lowered.startswith("_") or lowered.endswith(CONTEXT_NAMES):
        return True
    if annotation is inspect.Parameter.empty or annotation is None:
        return False
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = (text or repr(annotation)).lower()
    return any(word in text for word in CONTEXT_ANNOTATIONS)


def context_problem(function: Callable[..., Any], what: str) -> str | None:
    """Why ``function`` cannot take SAQ's context as its first argument, or None.

    SAQ calls every job function and hook with the worker context first. A function with
    no positional parameter cannot take it; a function whose first parameter is clearly
    something else (``def cleanup(user_id)``: not named like a context, not annotated as
    one) would get the context in that parameter, and fail when called with it.
    """
    code = getattr(function, "__code__", None)
    if (
        inspect.isfunction(function)
        and code is not None
        and not hasattr(function, "__wrapped__")
        and not hasattr(function, "__signature__")
    ):
        if code.co_argcount and looks_like_context(code.co_varnames[0], None):
            return None  # a plain function whose first parameter is ctx (fast path)
        if not code.co_argcount and code.co_flags & inspect.CO_VARARGS:
            return None  # def f(*args)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return f"{what} has no inspectable signature; define it with def or async def"
    params = list(signature.parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return None
    if params and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        first = params[0]
        if looks_like_context(first.name, first.annotation):
            return None
        return (
            f"{what} takes {first.name!r} as its first parameter, where SAQ passes the worker "
            f"context: write def {getattr(function, '__name__', 'f')}(ctx, {first.name}, ...) "
            "(a first parameter named ctx, context, *_ctx or _*, or annotated as "
            "saq.types.Context, is taken as the context)"
        )
    return (
        f"{what} cannot take the worker context: its first parameter must be the "
        "context (def f(ctx, ...))"
    )
