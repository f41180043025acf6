"""domainjobs: background jobs discovered from your app's domain folders, run as SAQ workers.

Drop ``tasks.py``, ``scheduled.py``, ``startup.py`` and ``shutdown.py`` into
``app/domain/<name>/jobs/`` and run ``python -m domainjobs run``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domainjobs.binding import TaskArgumentsError, UnserializableArgumentsError
    from domainjobs.discovery import discover
    from domainjobs.errors import (
        ConfigError,
        DiscoveryError,
        DomainJobsError,
        Problem,
        UnknownTaskError,
    )
    from domainjobs.facade import DuplicateKeyError, Jobs
    from domainjobs.handle import JobFailedError, JobHandle, JobTimeoutError
    from domainjobs.joboptions import JobOptions, JobOptionsError
    from domainjobs.marks import cron, on_shutdown, on_startup, task
    from domainjobs.registry import CronSpec, Domain, HookSpec, Registry, TaskSpec
    from domainjobs.runner import run_workers
    from domainjobs.worker import build_worker, build_workers

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``import domainjobs`` (and the pytest entry point) costs next to nothing.
_LAZY: dict[str, str] = {
    "ConfigError": "domainjobs.errors",
    "CronSpec": "domainjobs.registry",
    "DiscoveryError": "domainjobs.errors",
    "Domain": "domainjobs.registry",
    "DomainJobsError": "domainjobs.errors",
    "DuplicateKeyError": "domainjobs.facade",
    "HookSpec": "domainjobs.registry",
    "JobFailedError": "domainjobs.handle",
    "JobHandle": "domainjobs.handle",
    "JobOptions": "domainjobs.joboptions",
    "JobOptionsError": "domainjobs.joboptions",
    "JobTimeoutError": "domainjobs.handle",
    "Jobs": "domainjobs.facade",
    "Problem": "domainjobs.errors",
    "Registry": "domainjobs.registry",
    "TaskArgumentsError": "domainjobs.binding",
    "TaskSpec": "domainjobs.registry",
    "UnknownTaskError": "domainjobs.errors",
    "UnserializableArgumentsError": "domainjobs.binding",
    "build_worker": "domainjobs.worker",
    "build_workers": "domainjobs.worker",
    "cron": "domainjobs.marks",
    "discover": "domainjobs.discovery",
    "on_shutdown": "domainjobs.marks",
    "on_startup": "domainjobs.marks",
    "run_workers": "domainjobs.runner",
    "task": "domainjobs.marks",
}

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CronSpec",
    "DiscoveryError",
    "Domain",
    "DomainJobsError",
    "DuplicateKeyError",
    "HookSpec",
    "JobFailedError",
    "JobHandle",
    "JobOptions",
    "JobOptionsError",
    "JobTimeoutError",
    "Jobs",
    "Problem",
    "Registry",
    "TaskArgumentsError",
    "TaskSpec",
    "UnknownTaskError",
    "UnserializableArgumentsError",
    "__version__",
    "build_worker",
    "build_workers",
    "cron",
    "discover",
    "on_shutdown",
    "on_startup",
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
