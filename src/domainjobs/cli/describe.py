"""A registry as plain data (for ``list --json`` and the human listing)."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any

from croniter import croniter

from domainjobs.registry import CronSpec, HookSpec, Origin, Registry, TaskSpec


def next_runs(expression: str, count: int = 3, tz: tzinfo = timezone.utc) -> list[str]:
    """The next ``count`` run times of a cron expression, ISO 8601."""
    schedule = croniter(expression, datetime.now(tz))
    return [schedule.get_next(datetime).isoformat() for _ in range(count)]


def _where(origin: Origin) -> dict[str, Any]:
    return {"module": origin.module, "file": origin.file, "line": origin.line}


def describe_task(spec: TaskSpec) -> dict[str, Any]:
    """One task as JSON-able data."""
    return {
        "name": spec.name,
        "queue": spec.queue,
        "options": dict(spec.options),
        "async": spec.is_async,
        **_where(spec.origin),
    }


def describe_cron(spec: CronSpec, tz: tzinfo = timezone.utc) -> dict[str, Any]:
    """One cron job as JSON-able data, with its next run times."""
    return {
        "name": spec.name,
        "cron": spec.cron,
        "queue": spec.queue,
        "unique": spec.unique,
        "kwargs": dict(spec.kwargs) if spec.kwargs is not None else None,
        "options": dict(spec.options),
        "next_runs": next_runs(spec.cron, tz=tz),
        **_where(spec.origin),
    }


def describe_hook(spec: HookSpec) -> dict[str, Any]:
    """One hook as JSON-able data."""
    data: dict[str, Any] = {"name": spec.name, **_where(spec.origin)}
    if spec.kind in ("before_job", "after_job"):
        data["all_domains"] = spec.all_domains
    return data


def describe_registry(registry: Registry, tz: tzinfo = timezone.utc) -> dict[str, Any]:
    """Everything discovered, grouped by domain."""
    domains = []
    for domain in registry.domains:
        domains.append(
            {
                "name": domain.name,
                "package": domain.package,
                "queue": domain.queue,
                "defaults": dict(domain.defaults),
                "tasks": [describe_task(t) for t in registry if t.domain == domain.name],
                "crons": [
                    describe_cron(c, tz) for c in registry.crons if c.task.domain == domain.name
                ],
                "startup": [describe_hook(h) for h in registry.startup if h.domain == domain.name],
                "shutdown": [
                    describe_hook(h) for h in registry.shutdown if h.domain == domain.name
                ],
                "before_job": [
                    describe_hook(h) for h in registry.before_job if h.domain == domain.name
                ],
                "after_job": [
                    describe_hook(h) for h in registry.after_job if h.domain == domain.name
                ],
            }
        )
    return {
        "roots": list(registry.roots),
        "queues": list(registry.queues),
        "domains": domains,
        "warnings": [str(warning) for warning in registry.warnings],
    }
