"""Exceptions and the problem record every discovery and configuration error is made of."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from saq.job import Status

if TYPE_CHECKING:
    from saq.job import Job


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's jobs: what, and where (domain, file, line)."""

    message: str
    domain: str | None = None
    file: str | None = None
    line: int | None = None
    #: the full traceback of an exception behind the problem (``--debug`` prints it)
    traceback: str | None = field(default=None, repr=False, compare=False)

    def where(self) -> str:
        """Return ``file:line (domain 'x')`` or as much of it as is known."""
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.domain:
            parts.append(f"domain '{self.domain}'")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class FailedJob(Protocol):
    """What ``JobsFailedError`` reads of each failed job (``domainjobs.testing.RecordedJob``)."""

    @property
    def error(self) -> str | None:
        """The job's error text (its traceback)."""
        ...

    def describe(self) -> str:
        """One line naming the job."""
        ...


class FailedJobs(Protocol):
    """What ``JobsFailedError`` reads of the failed jobs (``domainjobs.testing.JobLog``)."""

    def __len__(self) -> int:
        """How many jobs failed."""
        ...

    def __iter__(self) -> Iterator[FailedJob]:
        """The failed jobs."""
        ...

    def listing(self) -> str:
        """One line per job."""
        ...


class ExitCode(IntEnum):
    """Every exit status of the ``domainjobs`` command (and its worker processes)."""

    OK = 0
    #: a runtime failure: a broker that stayed unreachable, a hook or job machinery that raised
    FAILURE = 1
    #: a usage, configuration or discovery error: fix the input, retrying will not help
    USAGE = 2
    #: ``broker status``: the embedded broker is not running (the LSB convention)
    NOT_RUNNING = 3
    #: interrupted by SIGINT (Ctrl-C) before anything started
    INTERRUPTED = 130
    #: the reader of our output went away (``list --json | head``), as a shell reports SIGPIPE
    BROKEN_PIPE = 141


class DomainJobsError(Exception):
    """Base class of every error domainjobs raises on purpose."""


class ConfigError(DomainJobsError):
    """A setting, flag, environment variable or URL is wrong."""


class DiscoveryError(DomainJobsError):
    """Discovery found one or more problems; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found while discovering jobs"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class UnknownTaskError(DomainJobsError, LookupError):
    """A task name that no discovered domain defines."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        suggestion = did_you_mean(name, known)
        super().__init__(f"unknown task {name!r}{suggestion}")


class EmbeddedBrokerError(DomainJobsError):
    """The embedded server could not be started, reached or stopped."""


class EmbeddedBrokerStoppedError(EmbeddedBrokerError):
    """The embedded server was stopped on purpose (``broker stop``), so a worker that finds
    it gone does not start it again. ``marker`` is the stop's record (when, by which pid)."""

    def __init__(self, folder: str, marker: str) -> None:
        self.folder = folder
        self.marker = marker
        super().__init__(
            f"the embedded broker in {folder} was stopped with `python -m domainjobs broker "
            "stop`, so this worker does not start it again and waits for it: start it with "
            "`python -m domainjobs broker start`, or restart the worker"
        )


class BrokerUnreachableError(DomainJobsError):
    """The broker did not answer within the configured ``connect_timeout``."""


class JobFailedError(DomainJobsError):
    """A job ended failed or aborted. ``job`` is the SAQ job, ``error`` its error text."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.status = Status(job.status)
        self.error = job.error or ""
        queue = job.queue.name if job.queue is not None else "?"
        last = self.error.strip().splitlines()[-1] if self.error.strip() else "no error recorded"
        super().__init__(
            f"job {job.key!r} of task {job.function!r} on queue {queue!r} ended "
            f"{self.status.value}: {last}"
        )


class LeaseLostError(DomainJobsError):
    """A worker's write about a job was refused: the lease it took the job under has lapsed
    (the job belongs to its queue again, and may already run elsewhere)."""


class TaskExitError(DomainJobsError):
    """A task raised ``SystemExit`` or ``KeyboardInterrupt``: that fails the job (SAQ's retry
    rules apply); it does not end the worker."""


class JobTimeoutError(DomainJobsError, TimeoutError):
    """Waiting for a job's result took longer than the wait timeout (the job goes on)."""


class DuplicateKeyError(DomainJobsError):
    """A job key is already used by a queued job of another task."""


class TaskArgumentsError(DomainJobsError, TypeError):
    """The arguments given for a task do not bind to its signature."""


class UnserializableArgumentsError(DomainJobsError, TypeError):
    """The queue's serializer cannot encode a task's arguments."""


class JobOptionsError(DomainJobsError, ValueError):
    """A job option given to ``with_options`` is invalid."""


class BrokerUnavailableError(ConfigError):
    """No test broker could be found or started."""


class HookError(DomainJobsError):
    """A shutdown hook raised while a test's worker context was closing."""


class UnserializableResultError(DomainJobsError, TypeError):
    """A task returned a value its queue's serializer cannot store."""


class DrainTimeoutError(DomainJobsError, TimeoutError):
    """``drain`` gave up with jobs still pending; the message lists them."""


class JobsFailedError(DomainJobsError, AssertionError):
    """Jobs ended failed or aborted during a drain; ``jobs`` holds them, the message shows
    each one's error."""

    def __init__(self, jobs: FailedJobs) -> None:
        self.jobs = jobs
        parts = [f"{len(jobs)} job(s) failed while draining:", jobs.listing()]
        for job in jobs:
            parts.append(f"--- {job.describe()}\n{(job.error or '').rstrip()}")
        super().__init__("\n".join(parts))


class WorkersStoppedError(DomainJobsError):
    """The in-process workers stopped (a startup hook raised, the broker went away)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choices, or an empty string."""
    import difflib  # start-up cost: only a misspelt name needs it, so a worker never pays it

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
