"""domainjobs: background jobs discovered from your app's domain folders, run as SAQ workers.

Drop ``tasks.py``, ``scheduled.py``, ``startup.py`` and ``shutdown.py`` into
``app/domain/<name>/jobs/`` and run ``python -m domainjobs run``.
"""

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
