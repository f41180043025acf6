"""What was enqueued, read back from the test broker: every job of the registry's queues
that the broker holds (queued, scheduled, running or finished), in enqueue order, with its
task, arguments, options, status, result and error.

Reading the broker, rather than wrapping a client, sees every enqueue whoever made it:
the ``jobs`` facade, the app's own ``Jobs``, a task running in a worker, another process.
A finished job stays readable for its ``ttl`` (SAQ's default: 600 s; ``ttl=-1`` jobs are
deleted as they finish). A second enqueue with the key of a pending job adds nothing (the
broker keeps one job per key), and so records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from saq.job import Job, Status

from domainjobs.options import RECORDED_FIELDS
from domainjobs.registry import DEFAULT_QUEUE, Registry

if TYPE_CHECKING:
    from domainjobs.client.jobs import Jobs

TaskRef = str | Callable[..., Any]

#: The ``saq.Job`` fields a recorded job reports as its options.
OPTION_FIELDS = RECORDED_FIELDS

FAILED_STATUSES = frozenset({Status.FAILED.value, Status.ABORTED.value})


def _status(job: Job) -> str:
    return str(getattr(job.status, "value", job.status))


def _call(task: str, kwargs: Mapping[str, Any] | None) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
    return f"{task}({args})"


def last_line(error: str | None) -> str:
    """The last non-empty line of a job's error (a traceback ends with the exception)."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no error recorded"


@dataclass(frozen=True)
class RecordedJob:
    """One job as the broker holds it."""

    task: str
    kwargs: Mapping[str, Any]
    queue: str
    key: str
    status: str
    options: Mapping[str, Any]
    result: Any
    error: str | None
    attempts: int
    job: Job = field(repr=False, compare=False)

    @classmethod
    def from_job(cls, job: Job) -> RecordedJob:
        """The record of a SAQ job read from the broker."""
        return cls(
            task=job.function,
            kwargs=dict(job.kwargs or {}),
            queue=job.queue.name if job.queue is not None else "?",
            key=job.key,
            status=_status(job),
            options={name: getattr(job, name) for name in OPTION_FIELDS},
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            job=job,
        )

    @property
    def complete(self) -> bool:
        """True when the job ended complete."""
        return self.status == Status.COMPLETE.value

    @property
    def failed(self) -> bool:
        """True when the job ended failed or aborted."""
        return self.status in FAILED_STATUSES

    def describe(self) -> str:
        """One line: the call, queue, status, and the error's last line if it failed."""
        text = f"{_call(self.task, self.kwargs)} on queue {self.queue!r}: {self.status}"
        if self.failed:
            text += f" after {self.attempts} attempt(s) - {last_line(self.error)}"
        return text

    def matches(
        self, task: str, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any] | None
    ) -> bool:
        """True for a job of ``task`` whose kwargs equal ``kwargs`` (when given) and whose
        options include every item of ``options`` (when given)."""
        if self.task != task:
            return False
        if kwargs is not None and dict(self.kwargs) != dict(kwargs):
            return False
        return options is None or all(
            name in self.options and self.options[name] == value for name, value in options.items()
        )


class JobLog(Sequence[RecordedJob]):
    """Recorded jobs, in enqueue order, with assertions whose failures list what the
    broker holds. Tasks are given by public name or function (a name that no domain
    defines is an error, so a typo cannot make an assertion pass)."""

    def __init__(self, jobs: Iterable[RecordedJob], registry: Registry | None = None) -> None:
        self._jobs = tuple(jobs)
        self.registry = registry

    @overload
    def __getitem__(self, index: int) -> RecordedJob: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RecordedJob]: ...
    def __getitem__(self, index: int | slice) -> RecordedJob | Sequence[RecordedJob]:
        return self._jobs[index]

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[RecordedJob]:
        return iter(self._jobs)

    def __repr__(self) -> str:
        return f"JobLog({len(self._jobs)} job(s))"

    def __str__(self) -> str:
        return self.listing()

    def listing(self) -> str:
        """Every job, one numbered line each."""
        if not self._jobs:
            return "  (no jobs)"
        return "\n".join(f"  {i}. {job.describe()}" for i, job in enumerate(self._jobs, 1))

    def name_of(self, task: TaskRef) -> str:
        """The public name of ``task`` (checked against the registry when there is one)."""
        if self.registry is not None:
            return self.registry.task(task).name
        if isinstance(task, str):
            return task
        raise TypeError("this JobLog has no registry: name tasks by their public name")

    def tasks(self) -> list[str]:
        """The task of every job, in enqueue order."""
        return [job.task for job in self._jobs]

    def of(self, task: TaskRef) -> JobLog:
        """The jobs of ``task``."""
        name = self.name_of(task)
        return JobLog((job for job in self._jobs if job.task == name), self.registry)

    @property
    def failed(self) -> JobLog:
        """The jobs that ended failed or aborted."""
        return JobLog((job for job in self._jobs if job.failed), self.registry)

    @property
    def pending(self) -> JobLog:
        """The jobs not finished yet (queued, scheduled, active, retrying)."""
        return JobLog(
            (job for job in self._jobs if not job.complete and not job.failed), self.registry
        )

    def matching(
        self,
        task: TaskRef,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> JobLog:
        """The jobs of ``task`` with exactly these ``kwargs`` and at least these
        ``options`` (each of them optional)."""
        name = self.name_of(task)
        return JobLog(
            (job for job in self._jobs if job.matches(name, kwargs, options)), self.registry
        )

    def _expectation(
        self, task: str, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any] | None
    ) -> str:
        text = f"task {task!r}"
        if kwargs is not None:
            text += f" with kwargs {dict(kwargs)!r}"
        if options is not None:
            text += f" {'and' if kwargs is not None else 'with'} options {dict(options)!r}"
        return text

    def _fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}; the broker holds {len(self)} job(s):\n{self.listing()}")

    def assert_enqueued(
        self,
        task: TaskRef,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        times: int | None = None,
    ) -> JobLog:
        """Assert that ``task`` was enqueued (with these kwargs/options, ``times`` times
        when given: default at least once); return the matching jobs."""
        name = self.name_of(task)
        found = self.matching(name, kwargs, options=options)
        if (times is None and not found) or (times is not None and len(found) != times):
            wanted = "at least one job" if times is None else f"{times} job(s)"
            raise self._fail(
                f"expected {wanted} of {self._expectation(name, kwargs, options)}, "
                f"found {len(found)}"
            )
        return found

    def assert_not_enqueued(
        self,
        task: TaskRef,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Assert that no job of ``task`` (with these kwargs/options) was enqueued."""
        name = self.name_of(task)
        found = self.matching(name, kwargs, options=options)
        if found:
            raise self._fail(
                f"expected no job of {self._expectation(name, kwargs, options)}, found {len(found)}"
            )

    def one(
        self,
        task: TaskRef,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> RecordedJob:
        """The single job of ``task`` matching ``kwargs``/``options``; ``AssertionError``
        when there is none or more than one."""
        return self.assert_enqueued(task, kwargs, options=options, times=1)[0]

    def result(self, task: TaskRef, kwargs: Mapping[str, Any] | None = None) -> Any:
        """The result of the single job of ``task`` (matching ``kwargs``);
        ``AssertionError`` if there is not exactly one or it did not complete."""
        job = self.one(task, kwargs)
        if not job.complete:
            detail = f":\n{job.error}" if job.failed and job.error else ""
            raise AssertionError(
                f"expected {_call(job.task, job.kwargs)} to be complete, but it is "
                f"{job.status}{detail}"
            )
        return job.result

    def results(self, task: TaskRef) -> list[Any]:
        """The results of the completed jobs of ``task``, in enqueue order."""
        return [job.result for job in self.of(task) if job.complete]


def queue_names(registry: Registry) -> tuple[str, ...]:
    """The queues whose jobs are recorded: every queue of the registry."""
    return registry.queues or (DEFAULT_QUEUE,)


async def read_jobs(jobs: Jobs, queues: Sequence[str]) -> list[RecordedJob]:
    """Every job the broker holds on ``queues``, in enqueue order."""
    found: list[Job] = []
    for name in queues:
        queue = await jobs.queue(name)
        found.extend([job async for job in queue.iter_jobs()])
    found.sort(key=lambda job: (job.queued, job.scheduled))
    return [RecordedJob.from_job(job) for job in found]


class EnqueueRecorder:
    """Reads what was enqueued on the test broker: ``await enqueued()`` is a ``JobLog``;
    ``await enqueued.assert_enqueued(...)`` reads and asserts in one step."""

    def __init__(self, jobs: Jobs, registry: Registry) -> None:
        self.jobs = jobs
        self.registry = registry

    async def __call__(self, task: TaskRef | None = None) -> JobLog:
        """Every recorded job (of ``task`` only, when given)."""
        log = JobLog(await read_jobs(self.jobs, queue_names(self.registry)), self.registry)
        return log if task is None else log.of(task)

    async def assert_enqueued(
        self,
        task: TaskRef,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        times: int | None = None,
    ) -> JobLog:
        """``JobLog.assert_enqueued`` on what the broker holds now."""
        return (await self()).assert_enqueued(task, kwargs, options=options, times=times)

    async def assert_not_enqueued(
        self,
        task: TaskRef,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """``JobLog.assert_not_enqueued`` on what the broker holds now."""
        (await self()).assert_not_enqueued(task, kwargs, options=options)
