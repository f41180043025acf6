"""The domains' before-job and after-job hooks as SAQ ``before_process``/``after_process``
functions.

A domain's hook runs around the jobs of its own tasks (looked up by the job's function
name, the task's public name); one marked ``all_domains=True`` runs around every job.
Before-job hooks run in discovery order, after the worker's own; after-job hooks run in
the reverse order, before the worker's own, so each domain's pair nests inside the next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from domainjobs.registry import HookSpec, Registry
from domainjobs.runtime.hooks import call_hook

Hook = Callable[[dict[str, Any]], Any]


def _scoped(hook: HookSpec, domain_of: Mapping[str, str]) -> Hook:
    """``hook`` as a SAQ process function that skips the jobs of other domains."""

    async def around_job(ctx: dict[str, Any]) -> None:
        job = ctx.get("job")
        if hook.all_domains or (job is not None and domain_of.get(job.function) == hook.domain):
            await call_hook(hook, ctx)

    around_job.__qualname__ = around_job.__name__ = hook.name
    return around_job


def _as_list(hooks: Any) -> list[Any]:
    """One hook, a sequence of them, or None, as a list (litestar-saq also takes a dotted
    name as a string)."""
    if hooks is None:
        return []
    return [hooks] if callable(hooks) or isinstance(hooks, str) else list(hooks)


def with_domain_job_hooks(
    registry: Registry,
    before: Sequence[Hook] | Hook | None,
    after: Sequence[Hook] | Hook | None,
) -> tuple[list[Any], list[Any]]:
    """The ``before_process`` and ``after_process`` lists of a worker: the caller's own
    (``before``/``after``) with the registry's job hooks added around them."""
    domain_of = {name: spec.domain for name, spec in registry.tasks.items()}
    return (
        [*_as_list(before), *(_scoped(hook, domain_of) for hook in registry.before_job)],
        [*(_scoped(hook, domain_of) for hook in registry.after_job), *_as_list(after)],
    )
