"""litestar-saq adapter: build its ``QueueConfig`` list from discovery (extra ``litestar``).

```python
from litestar_saq import SAQConfig, SAQPlugin
from domainjobs.contrib.litestar import queue_configs

saq = SAQPlugin(config=SAQConfig(queue_configs=queue_configs(), web_enabled=True))
```

One ``QueueConfig`` per discovered queue, with its tasks and cron jobs registered under
their public names (``billing.charge``), the domains' startup/shutdown hooks shared
so they run once per worker process, and their before/after-job hooks around each job.
``litestar workers run`` and litestar-saq's web UI then work as before.

Naming: litestar-saq drops the name of a ``(name, function)`` tuple and registers the
function under its ``__qualname__`` (as SAQ's cron scheduler also does), so each task is
given as a clone of its function whose ``__qualname__`` is the public name
(``domainjobs.runtime.worker.renamed``): same code, no wrapper, no extra call per job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from domainjobs.brokers.urls import bad_url, resolve_url
from domainjobs.config import apply_app_dir, cron_timezone, load_settings
from domainjobs.discovery.builder import resolve_registry
from domainjobs.options import CRON_JOB_OPTIONS
from domainjobs.registry import DEFAULT_QUEUE, CronSpec, Registry, RegistryOrRoots
from domainjobs.runtime.hooks import HookRunner
from domainjobs.runtime.job_hooks import with_domain_job_hooks
from domainjobs.runtime.worker import renamed, saq_cron_job


def public_functions(registry: Registry, queue: str) -> list[Callable[..., Any]]:
    """The tasks of ``queue`` as functions whose ``__qualname__`` is their public name."""
    return [renamed(spec.function, spec.name) for spec in registry.tasks_for(queue)]


def _cron_job(spec: CronSpec) -> Any:
    """litestar-saq's ``CronJob`` (SAQ's, plus ``meta``) keyed by the public name."""
    from litestar_saq import CronJob

    job = saq_cron_job(spec)
    options = {name: getattr(job, name) for name in CRON_JOB_OPTIONS}
    return CronJob(
        function=job.function, cron=job.cron, unique=job.unique, kwargs=job.kwargs, **options
    )


def _broker(url: str) -> dict[str, Any]:
    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith("valkey"):
        return {"dsn": "redis" + url[len("valkey") :]}
    if scheme in ("redis", "rediss"):
        return {"dsn": url}
    if scheme in ("postgres", "postgresql"):
        return {"dsn": "postgresql" + url[len(scheme) :]}
    if scheme == "unix":  # litestar-saq's dsn takes redis:// and postgresql:// only
        import redis.asyncio as aioredis

        return {"broker_instance": aioredis.from_url(url)}

    raise bad_url(url, "is not a broker litestar-saq can use (redis, rediss, unix, postgresql)")


def queue_configs(
    registry_or_roots: RegistryOrRoots = None,
    *,
    url: str | None = None,
    queues: Sequence[str] | None = None,
    per_queue: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> list[Any]:
    """litestar-saq ``QueueConfig``s for the discovered queues (default: all of them).

    ``url`` is the broker (default: the configured one); ``options`` go to every
    ``QueueConfig`` (``concurrency=20``, ``separate_process=False``, ...) and
    ``per_queue={"billing": {...}}`` to one. ``cron_tz`` defaults to the configured zone.
    """
    from litestar_saq import QueueConfig

    settings = load_settings()
    # the `litestar` script (unlike `python -m litestar`) does not put the current directory
    # on sys.path: put the configured app directory there, as `python -m domainjobs` does
    apply_app_dir(settings)
    registry = resolve_registry(registry_or_roots)
    broker = _broker(resolve_url(url, settings))
    hooks = HookRunner(registry.startup, registry.shutdown)
    names = list(queues) if queues else list(registry.queues) or [DEFAULT_QUEUE]
    configs = []
    for name in names:
        kwargs: dict[str, Any] = {
            "cron_tz": cron_timezone(settings.cron_tz),
            **options,
            **dict((per_queue or {}).get(name, {})),
        }
        kwargs["before_process"], kwargs["after_process"] = with_domain_job_hooks(
            registry, kwargs.get("before_process"), kwargs.get("after_process")
        )
        configs.append(
            QueueConfig(
                name=name,
                tasks=public_functions(registry, name),
                scheduled_tasks=[_cron_job(spec) for spec in registry.crons_for(name)],
                startup=[cast(Any, hooks.startup)],
                shutdown=[cast(Any, hooks.shutdown)],
                **broker,
                **kwargs,
            )
        )
    return configs
