"""domainjobs.testing: test the code that enqueues and runs your jobs, for real.

- ``TaskRunner`` / ``run_task``: run one task directly, with a context built exactly as
  the worker builds it (startup hooks applied, shutdown hooks run at the end).
- ``JobsHarness``: a ``Jobs`` facade on a throwaway broker with the workers running in
  this process; ``drain()`` runs everything enqueued, jobs enqueued by jobs included.
- ``JobLog`` / ``EnqueueRecorder``: what was enqueued (task, kwargs, options), read back
  from the broker, with assertions.
- ``throwaway_broker``: the broker those use (``DOMAINJOBS_TEST_URL``, else a fresh
  server).

With pytest, the same as fixtures (``run_task``, ``jobs``, ``drain``, ``enqueued``,
``jobs_harness``): opt in with ``pytest -p domainjobs.testing``,
``pytest_plugins = ["domainjobs.testing"]``, or by importing this module. See
docs/testing.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domainjobs._pytest_entry import activate, activate_if_running
from domainjobs.errors import (
    BrokerUnavailableError,
    DrainTimeoutError,
    HookError,
    JobsFailedError,
    UnserializableResultError,
    WorkersStoppedError,
)
from domainjobs.testing.broker import (
    TEST_URL_VARIABLE,
    find_server_binary,
    reset_broker,
    throwaway_broker,
    throwaway_server,
)
from domainjobs.testing.context import TaskRunner, run_task
from domainjobs.testing.harness import JobsHarness
from domainjobs.testing.recorder import EnqueueRecorder, JobLog, RecordedJob

if TYPE_CHECKING:
    import pytest

__all__ = [
    "TEST_URL_VARIABLE",
    "BrokerUnavailableError",
    "DrainTimeoutError",
    "EnqueueRecorder",
    "HookError",
    "JobLog",
    "JobsFailedError",
    "JobsHarness",
    "RecordedJob",
    "TaskRunner",
    "UnserializableResultError",
    "WorkersStoppedError",
    "find_server_binary",
    "reset_broker",
    "run_task",
    "throwaway_broker",
    "throwaway_server",
]


def pytest_configure(config: pytest.Config) -> None:
    """``pytest -p domainjobs.testing`` / ``pytest_plugins``: register the fixtures."""

    activate(config)


def _activate_on_import() -> None:

    activate_if_running()


_activate_on_import()
