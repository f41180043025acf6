"""The pytest fixtures of ``domainjobs.testing`` (registered when a project opts in; see
``domainjobs._pytest_entry``). The async ones need pytest-asyncio, in either mode.

========================  ==================================================================
``run_task``              ``await run_task(task, **kwargs)``: one task, run directly with
                          a worker's context (startup hooks, the task, shutdown hooks)
``jobs``                  a ``Jobs`` facade on the test broker, workers running in-process
``drain``                 ``await drain()``: run every pending job (and what they enqueue);
                          returns a ``JobLog``
``enqueued``              ``await enqueued()``: a ``JobLog`` of every job on the broker
``jobs_harness``          the ``JobsHarness`` behind ``jobs``, ``drain`` and ``enqueued``
``domainjobs_registry``   the discovered registry (session); override it to pick roots
``domainjobs_broker_url`` the test broker for the session
``domainjobs_url``        that broker, emptied for this test and exported as DOMAINJOBS_URL
========================  ==================================================================

``@pytest.mark.domainjobs(workers=False, cron=False, concurrency=10)`` changes how the
workers of one test run (``workers=False``: jobs run only inside ``drain``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the user's environment
    raise ImportError(
        "domainjobs.testing's fixtures need pytest-asyncio: pip install 'domainjobs[testing]'"
    ) from None

from domainjobs.client.jobs import Jobs
from domainjobs.config import apply_app_dir, load_settings
from domainjobs.discovery.builder import discover_configured
from domainjobs.registry import Registry
from domainjobs.testing.broker import reset_broker, throwaway_broker
from domainjobs.testing.context import TaskRunner
from domainjobs.testing.harness import JobsHarness
from domainjobs.testing.recorder import EnqueueRecorder, JobLog

MARKER = "domainjobs"
MARKER_OPTIONS = ("workers", "cron", "concurrency")


class RunTask(Protocol):
    """The ``run_task`` fixture: run one task directly and return its result."""

    async def __call__(self, task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``task`` with ``kwargs`` in a fresh worker context."""


class Drain(Protocol):
    """The ``drain`` fixture (``JobsHarness.drain``)."""

    async def __call__(
        self, timeout: float = ..., *, scheduled: bool = ..., raise_on_failure: bool = ...
    ) -> JobLog:
        """Run every pending job and return the ``JobLog``."""


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``domainjobs`` marker."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(workers=True, cron=False, concurrency=10): how domainjobs.testing runs "
        "this test's in-process workers",
    )


@pytest.fixture(scope="session")
def domainjobs_registry() -> Registry:
    """The registry of the configured roots (``[tool.domainjobs] roots`` of the project's
    pyproject.toml, ``DOMAINJOBS_ROOTS``, else ``app.domain``). Override this fixture in
    your conftest.py to discover other roots."""
    settings = load_settings()
    apply_app_dir(settings)
    return discover_configured(settings)


@pytest.fixture(scope="session")
def domainjobs_broker_url() -> Iterator[str]:
    """The session's test broker: ``DOMAINJOBS_TEST_URL``, else a throwaway server."""
    with throwaway_broker() as url:
        yield url


@pytest.fixture
def domainjobs_url(domainjobs_broker_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test broker, emptied for this test, and exported as ``DOMAINJOBS_URL`` so that
    the app's own ``Jobs()`` enqueues there too."""
    reset_broker(domainjobs_broker_url)
    monkeypatch.setenv("DOMAINJOBS_URL", domainjobs_broker_url)
    return domainjobs_broker_url


@pytest_asyncio.fixture
async def jobs_harness(
    request: pytest.FixtureRequest, domainjobs_registry: Registry, domainjobs_url: str
) -> AsyncIterator[JobsHarness]:
    """A ``JobsHarness`` on the test broker (workers as the ``domainjobs`` marker says)."""
    options: dict[str, Any] = {}
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if marker.args:
            raise TypeError(f"@pytest.mark.{MARKER} takes keyword arguments only")
        unknown = sorted(set(marker.kwargs) - set(MARKER_OPTIONS))
        if unknown:
            raise TypeError(
                f"@pytest.mark.{MARKER}: unknown option(s) {', '.join(unknown)} "
                f"(known: {', '.join(MARKER_OPTIONS)})"
            )
        options.update(marker.kwargs)
    async with JobsHarness(domainjobs_registry, url=domainjobs_url, reset=False, **options) as h:
        yield h


@pytest.fixture
def jobs(jobs_harness: JobsHarness) -> Jobs:
    """The ``Jobs`` facade of the test: the test broker, workers running in-process."""
    return jobs_harness.jobs


@pytest.fixture
def drain(jobs_harness: JobsHarness) -> Drain:
    """``await drain()`` runs every pending job, and those they enqueue; see
    ``JobsHarness.drain``."""
    return jobs_harness.drain


@pytest.fixture
def enqueued(jobs_harness: JobsHarness) -> EnqueueRecorder:
    """``await enqueued()`` is the ``JobLog`` of every job on the test broker."""
    return jobs_harness.enqueued


@pytest.fixture
def run_task(domainjobs_registry: Registry, domainjobs_url: str) -> RunTask:
    """``await run_task(task, **kwargs)``: run one task directly, with a context built as
    a worker builds it (startup hooks before, shutdown hooks after), on the test broker."""

    async def run(task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        async with TaskRunner(domainjobs_registry, url=domainjobs_url) as runner:
            return await runner.run(task, *args, **kwargs)

    return run
