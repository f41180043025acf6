"""Job options: ``OPTIONS``, the one table of every SAQ job option domainjobs takes (its
types, SAQ's default, a line of help, where it may be set and its ``enqueue`` flag), what
is derived from it (the option lists of ``@task``/``@cron``/``job_defaults``, the typed
``TaskOptions``/``CronOptions``/``CallOptions``, validation), and ``JobOptions``, the
per-call options of ``jobs.with_options(...)``.

Per-call options are kept apart from a task's own arguments. Plain
``saq.Queue.enqueue(name, **kw)`` treats any keyword that is a ``saq.Job`` field as a job
option, so a task parameter called ``timeout`` or ``key`` is silently swallowed.
domainjobs never mixes the two: task arguments go to ``enqueue(task, **kwargs)``, job
options to ``with_options``. They are validated once, when ``with_options`` is called.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from typing_extensions import TypedDict

from domainjobs.errors import (
    JobOptionsError,
    did_you_mean,
)

#: Where an option may be set.
TASK: Final = "@task"  #: ``@task(...)`` on the function
CRON: Final = "@cron"  #: ``@cron(...)`` and ``saq.CronJob(...)`` in ``scheduled_tasks``
DOMAIN: Final = "job_defaults"  #: a domain's ``job_defaults`` dict
CALL: Final = "with_options"  #: per call: ``jobs.with_options(...)`` (``JobOptions``)
RECORDED: Final = "recorded"  #: a ``saq.Job`` field the test recorder reports as an option

Place = Literal["@task", "@cron", "job_defaults", "with_options", "recorded"]


@dataclasses.dataclass(frozen=True)
class JobOption:
    """One job option: its accepted types, SAQ's default, what it does, where it may be set,
    and its ``domainjobs enqueue`` flag (if it has one)."""

    name: str
    types: tuple[type, ...]
    default: Any
    help: str
    places: frozenset[Place]
    flag: str | None = None
    metavar: str | None = None

    @property
    def is_job_field(self) -> bool:
        """Whether it is a field of ``saq.Job`` (else an option of the call only)."""
        return RECORDED in self.places


_EVERYWHERE: frozenset[Place] = frozenset({TASK, CRON, DOMAIN, CALL, RECORDED})
_NOT_CRON: frozenset[Place] = frozenset({TASK, DOMAIN, CALL, RECORDED})
_CALL_ONLY: frozenset[Place] = frozenset({CALL, RECORDED})

#: Every job option, the one table the decorators, ``job_defaults``, ``with_options``,
#: cron jobs, the test recorder and ``domainjobs enqueue``'s flags are derived from.
#: ``default`` is SAQ's own (``saq.Job``), used when nothing sets the option.
OPTIONS: tuple[JobOption, ...] = (
    JobOption("key", (str,), None, "job key: one queued job per key", _CALL_ONLY, "--key"),
    JobOption(
        "timeout", (int,), 10, "seconds the job may run (0: no limit)", _EVERYWHERE,
        "--job-timeout", "S",
    ),
    JobOption(
        "retries", (int,), 1, "attempts before the job fails", _EVERYWHERE, "--retries", "N"
    ),
    JobOption("ttl", (int,), 600, "seconds a finished job is kept (-1: not kept)", _EVERYWHERE),
    JobOption(
        "heartbeat", (int,), 0, "seconds without a heartbeat before the job is stuck (0: off)",
        _EVERYWHERE,
    ),
    JobOption(
        "retry_delay", (int, float), 0.0, "seconds between attempts", _NOT_CRON
    ),
    JobOption(
        "retry_backoff", (bool, int, float), False,
        "grow retry_delay exponentially (true, or a cap in seconds)", _NOT_CRON,
    ),
    JobOption(
        "scheduled", (int, float, datetime), 0,
        "when to run: epoch seconds or an aware datetime", _CALL_ONLY,
    ),
    JobOption(
        "delay", (int, float), None, "run no sooner than this many seconds from now",
        frozenset({CALL}), "--delay", "S",
    ),
    JobOption("meta", (Mapping,), None, "free-form metadata stored with the job", _CALL_ONLY),
    JobOption("priority", (int,), 0, "lower runs first (PostgreSQL broker)", _CALL_ONLY),
    JobOption(
        "group_key", (str,), None, "one job of the group runs at a time (PostgreSQL broker)",
        _CALL_ONLY,
    ),
    JobOption(
        "wait_timeout", (int, float), None,
        "seconds apply/map/result wait for the job (default: no limit)", frozenset({CALL}),
    ),
)  # fmt: skip

BY_NAME: dict[str, JobOption] = {option.name: option for option in OPTIONS}


def names(place: Place) -> tuple[str, ...]:
    """The options that may be set at ``place``, in table order."""
    return tuple(option.name for option in OPTIONS if place in option.places)


#: Options a task may default (``@task``, ``job_defaults``): option name -> accepted types.
JOB_OPTIONS: dict[str, tuple[type, ...]] = {name: BY_NAME[name].types for name in names(TASK)}

#: Options a cron job carries (``saq.CronJob`` has only these).
CRON_JOB_OPTIONS = names(CRON)

#: Keys allowed in a domain's ``job_defaults``.
DOMAIN_DEFAULT_KEYS = ("queue", *names(DOMAIN))

#: The ``saq.Job`` fields a recorded job reports as its options.
RECORDED_FIELDS = names(RECORDED)


class TaskOptions(TypedDict, total=False):
    """The options ``@task(...)`` takes (``None``: not set). Checked against ``OPTIONS``."""

    timeout: int | None
    retries: int | None
    ttl: int | None
    heartbeat: int | None
    retry_delay: float | None
    retry_backoff: bool | float | None


class CronOptions(TypedDict, total=False):
    """The options ``@cron(...)`` takes (``None``: not set). Checked against ``OPTIONS``."""

    timeout: int | None
    retries: int | None
    ttl: int | None
    heartbeat: int | None


class CallOptions(TaskOptions, total=False):
    """The options ``jobs.with_options(...)`` takes. Checked against ``OPTIONS``."""

    key: str | None
    scheduled: float | datetime | None
    delay: float | None
    meta: Mapping[str, Any] | None
    priority: int | None
    group_key: str | None
    wait_timeout: float | None


def option_errors(options: Mapping[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """One sentence per unknown key or badly typed value in ``options``."""
    errors = []
    for key, value in options.items():
        if key not in allowed:
            errors.append(
                f"unknown option {key!r}{did_you_mean(key, allowed)} "
                f"(allowed: {', '.join(allowed)})"
            )
        elif key == "queue":
            if not isinstance(value, str) or not value:
                errors.append(f"queue must be a non-empty string, got {value!r}")
        else:
            types = BY_NAME[key].types
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                names = " or ".join(t.__name__ for t in types)
                errors.append(f"{key} must be {names}, got {value!r}")
            elif not isinstance(value, bool) and isinstance(value, (int, float)) and value < 0:
                errors.append(f"{key} must not be negative, got {value!r}")
    return errors


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """Options of the SAQ job (not arguments of the task). ``None`` means "not set here":
    the task's ``@task(...)``/domain defaults, then SAQ's own defaults apply.

    ``key`` makes the job unique while it is queued, scheduled or running; ``scheduled`` is
    a time (epoch seconds or an aware ``datetime``) and ``delay`` seconds from now;
    ``wait_timeout`` bounds how long ``apply``/``map``/``result`` wait (default: no limit).
    """

    key: str | None = None
    timeout: int | None = None
    retries: int | None = None
    ttl: int | None = None
    heartbeat: int | None = None
    retry_delay: float | None = None
    retry_backoff: bool | float | None = None
    scheduled: float | datetime | None = None
    delay: float | None = None
    meta: Mapping[str, Any] | None = None
    priority: int | None = None
    group_key: str | None = None
    wait_timeout: float | None = None

    def __post_init__(self) -> None:
        errors = option_errors(
            {k: getattr(self, k) for k in JOB_OPTIONS if getattr(self, k) is not None},
            tuple(JOB_OPTIONS),
        )
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            errors.append(f"key must be a non-empty string, got {self.key!r}")
        if self.scheduled is not None and self.delay is not None:
            errors.append("give scheduled or delay, not both")
        if isinstance(self.scheduled, datetime) and self.scheduled.tzinfo is None:
            errors.append(
                f"scheduled must be timezone-aware, got naive {self.scheduled!r}; "
                "use datetime.now(timezone.utc) + timedelta(...)"
            )
        for name in ("delay", "wait_timeout"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                errors.append(f"{name} must be a non-negative number of seconds, got {value!r}")
        if errors:
            raise JobOptionsError("invalid job option: " + "; ".join(errors))

    def merged(self, other: JobOptions) -> JobOptions:
        """These options with every option ``other`` sets replacing ours."""
        changes = {
            f.name: v
            for f in dataclasses.fields(other)
            if (v := getattr(other, f.name)) is not None
        }
        if "scheduled" in changes:  # the later of the two ways to say "when" wins
            changes["delay"] = None
        elif "delay" in changes:
            changes["scheduled"] = None
        return dataclasses.replace(self, **changes)

    def job_fields(self) -> dict[str, Any]:
        """The ``saq.Job`` fields these options set (``scheduled`` resolved to epoch seconds)."""
        fields: dict[str, Any] = {}
        for name in RECORDED_FIELDS:
            value = getattr(self, name)
            if name in ("scheduled", "meta"):
                continue
            if value is not None:
                fields[name] = value
        if self.meta is not None:
            fields["meta"] = dict(self.meta)
        if self.delay is not None:
            fields["scheduled"] = int(time.time() + self.delay)
        elif isinstance(self.scheduled, datetime):
            fields["scheduled"] = int(self.scheduled.timestamp())
        elif self.scheduled is not None:
            fields["scheduled"] = int(self.scheduled)
        return fields

    @property
    def per_call(self) -> bool:
        """True when the fields depend on the moment of the call (``delay``)."""
        return self.delay is not None


NO_OPTIONS = JobOptions()


def _check_schema() -> None:
    """The typed signatures agree with ``OPTIONS`` (a mismatch fails at import, in tests)."""
    typed: dict[Place, set[str]] = {
        TASK: set(TaskOptions.__annotations__),
        CRON: set(CronOptions.__annotations__),
        CALL: set(CallOptions.__annotations__),
    }
    typed[CALL] |= set(typed[TASK])
    for place, keys in typed.items():
        if keys != set(names(place)):
            raise AssertionError(f"{place} options {sorted(keys)} != OPTIONS {names(place)}")
    fields = {f.name for f in dataclasses.fields(JobOptions)}
    if fields != set(names(CALL)):
        raise AssertionError(f"JobOptions fields {sorted(fields)} != OPTIONS {names(CALL)}")


_check_schema()
