"""Check a task's arguments before anything reaches the broker: they must bind to the task's
signature (minus SAQ's context parameter) and the queue's serializer must encode them.

A ``Binder`` is computed once per task from its signature and then only does set
arithmetic per call, so validation costs far less than the broker round trip.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from domainjobs.errors import (
    TaskArgumentsError,
    UnserializableArgumentsError,
    did_you_mean,
)
from domainjobs.registry import TaskSpec

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Binder:
    """What a task accepts, precomputed from its signature (the context parameter removed)."""

    task: str
    positional: tuple[str, ...]
    allowed: frozenset[str]
    required: frozenset[str]
    var_keyword: bool
    problem: str | None = None

    @classmethod
    def for_spec(cls, spec: TaskSpec) -> Binder:
        """The binder of a discovered task."""
        params = list(spec.signature.parameters.values())[1:]  # drop ctx
        problem = None
        unusable = [
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)
        ]
        if unusable:
            problem = (
                f"task {spec.name!r} cannot be enqueued: its parameter(s) "
                f"{', '.join(unusable)} are positional-only or *args, and SAQ passes task "
                "arguments by keyword only; make them ordinary parameters"
            )
        named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return cls(
            task=spec.name,
            positional=tuple(p.name for p in named if p.kind in _POSITIONAL),
            allowed=frozenset(p.name for p in named),
            required=frozenset(p.name for p in named if p.default is inspect.Parameter.empty),
            var_keyword=any(p.kind is p.VAR_KEYWORD for p in params),
            problem=problem,
        )

    def _takes(self) -> str:
        names = [*self.positional, *sorted(self.allowed - set(self.positional))]
        if self.var_keyword:
            names.append("**kwargs")
        return ", ".join(names) or "no arguments"

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The task's keyword arguments for ``args``/``kwargs``; ``TaskArgumentsError`` if
        they do not bind (positional values are mapped to their parameter names)."""
        if self.problem is not None:
            raise TaskArgumentsError(self.problem)
        bound = kwargs if type(kwargs) is dict else dict(kwargs)
        if args:
            bound = dict(bound)
            if len(args) > len(self.positional):
                raise TaskArgumentsError(
                    f"task {self.task!r} takes at most {len(self.positional)} positional "
                    f"argument(s) after the context but {len(args)} were given "
                    f"(it takes: {self._takes()})"
                )
            for name, value in zip(self.positional, args, strict=False):
                if name in bound:
                    raise TaskArgumentsError(
                        f"task {self.task!r} got two values for argument {name!r} "
                        "(positionally and by keyword); pass it once"
                    )
                bound[name] = value
        if not self.var_keyword:
            unexpected = bound.keys() - self.allowed
            if unexpected:
                name = sorted(unexpected)[0]
                raise TaskArgumentsError(
                    f"task {self.task!r} got unexpected argument(s) "
                    f"{', '.join(repr(n) for n in sorted(unexpected))}"
                    f"{did_you_mean(name, self.allowed)} (it takes: {self._takes()}); "
                    "job options such as timeout or key go in jobs.with_options(...)"
                )
        missing = self.required.difference(bound)
        if missing:
            raise TaskArgumentsError(
                f"task {self.task!r} is missing required argument(s) "
                f"{', '.join(repr(n) for n in sorted(missing))} (it takes: {self._takes()})"
            )
        return bound


def dump_function(queue: object) -> Callable[[Any], Any]:
    """The serializer a SAQ queue encodes jobs with (``json.dumps`` unless configured)."""
    dump = getattr(queue, "_dump", None)
    return dump if callable(dump) else json.dumps


#: Values every serializer encodes: checking them would cost more than it could catch.
PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def plain_values(kwargs: Mapping[str, Any]) -> bool:
    """True when every argument is a str, int, float, bool or None (no check needed)."""
    return PLAIN_TYPES.issuperset(map(type, kwargs.values()))


def check_serializable(task: str, kwargs: Mapping[str, Any], dump: Callable[[Any], Any]) -> None:
    """Raise ``UnserializableArgumentsError`` naming the first argument ``dump`` rejects."""
    try:
        dump(kwargs)
    except Exception as whole:
        for name, value in kwargs.items():
            try:
                dump({name: value})
            except Exception as exc:
                raise UnserializableArgumentsError(
                    f"task {task!r}: argument {name!r} = {_short(value)} cannot be encoded by "
                    f"the queue's serializer ({exc}); pass plain JSON values (str, int, float, "
                    "bool, None, list, dict) or configure the queue's dump/load"
                ) from None
        raise UnserializableArgumentsError(
            f"task {task!r}: its arguments cannot be encoded by the queue's serializer "
            f"({whole}); pass plain JSON values or configure the queue's dump/load"
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
