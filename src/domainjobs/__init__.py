"""domainjobs: background jobs discovered from your app's domain folders, run as SAQ workers.

Drop ``tasks.py``, ``scheduled.py``, ``startup.py`` and ``shutdown.py`` into
``app/domain/<name>/jobs/`` and run ``python -m domainjobs run``.

``domainjobs.__all__`` is the public API. Beside it, these sub-modules are public too:
``domainjobs.testing`` (test helpers and pytest fixtures), ``domainjobs.lifespan``
(``jobs_lifespan``), ``domainjobs.web`` (``create_app``), ``domainjobs.contrib.litestar`` and
``domainjobs.observability`` (``enable_tracing``, ``enable_metrics``; its ``instrumentor``
module is OpenTelemetry's entry point).
Every other module is internal: the sub-packages name the pipeline's stages
(``discovery`` → ``registry`` → ``runtime`` → ``brokers`` → ``client``) and may change
between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domainjobs.brokers.urls import queue_from_url, resolve_url
    from domainjobs.client.handle import JobHandle
    from domainjobs.client.jobs import Jobs
    from domainjobs.config import Settings, load_settings
    from domainjobs.discovery.builder import discover, discover_configured
    from domainjobs.discovery.marks import (
        after_job,
        before_job,
        cron,
        on_shutdown,
        on_startup,
        task,
    )
    from domainjobs.errors import (
        BrokerUnreachableError,
        ConfigError,
        DiscoveryError,
        DomainJobsError,
        DuplicateKeyError,
        EmbeddedBrokerError,
        EmbeddedBrokerStoppedError,
        ExitCode,
        JobFailedError,
        JobOptionsError,
        JobTimeoutError,
        LeaseLostError,
        Problem,
        TaskArgumentsError,
        TaskExitError,
        UnknownTaskError,
        UnserializableArgumentsError,
    )
    from domainjobs.options import JobOptions
    from domainjobs.registry import CronSpec, Domain, HookSpec, Registry, TaskSpec
    from domainjobs.runtime.runner import run_workers
    from domainjobs.runtime.worker import DomainWorker, build_worker, build_workers

#: Where each public name is defined. Imported on first use (PEP 562), so that
#: ``import domainjobs`` (and the pytest entry point) costs next to nothing.
_PUBLIC: dict[str, tuple[str, ...]] = {
    "domainjobs.brokers.urls": ("queue_from_url", "resolve_url"),
    "domainjobs.client.handle": ("JobHandle",),
    "domainjobs.client.jobs": ("Jobs",),
    "domainjobs.config": ("Settings", "load_settings"),
    "domainjobs.discovery.builder": ("discover", "discover_configured"),
    "domainjobs.discovery.marks": (
        "after_job",
        "before_job",
        "cron",
        "on_shutdown",
        "on_startup",
        "task",
    ),
    "domainjobs.errors": (
        "BrokerUnreachableError",
        "ConfigError",
        "DiscoveryError",
        "DomainJobsError",
        "DuplicateKeyError",
        "EmbeddedBrokerError",
        "EmbeddedBrokerStoppedError",
        "ExitCode",
        "JobFailedError",
        "JobOptionsError",
        "JobTimeoutError",
        "LeaseLostError",
        "Problem",
        "TaskArgumentsError",
        "TaskExitError",
        "UnknownTaskError",
        "UnserializableArgumentsError",
    ),
    "domainjobs.options": ("JobOptions",),
    "domainjobs.registry": ("CronSpec", "Domain", "HookSpec", "Registry", "TaskSpec"),
    "domainjobs.runtime.runner": ("run_workers",),
    "domainjobs.runtime.worker": ("DomainWorker", "build_worker", "build_workers"),
}
_LAZY: dict[str, str] = {name: module for module, names in _PUBLIC.items() for name in names}

__version__ = "0.1.0"

__all__ = [
    "BrokerUnreachableError",
    "ConfigError",
    "CronSpec",
    "DiscoveryError",
    "Domain",
    "DomainJobsError",
    "DomainWorker",
    "DuplicateKeyError",
    "EmbeddedBrokerError",
    "EmbeddedBrokerStoppedError",
    "ExitCode",
    "HookSpec",
    "JobFailedError",
    "JobHandle",
    "JobOptions",
    "JobOptionsError",
    "JobTimeoutError",
    "Jobs",
    "LeaseLostError",
    "Problem",
    "Registry",
    "Settings",
    "TaskArgumentsError",
    "TaskExitError",
    "TaskSpec",
    "UnknownTaskError",
    "UnserializableArgumentsError",
    "__version__",
    "after_job",
    "before_job",
    "build_worker",
    "build_workers",
    "cron",
    "discover",
    "discover_configured",
    "load_settings",
    "on_shutdown",
    "on_startup",
    "queue_from_url",
    "resolve_url",
    "run_workers",
    "task",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'domainjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
