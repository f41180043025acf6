"""Job options: the SAQ job fields that tasks and domains may set as defaults, their
validation, and the per-call options of ``jobs.with_options(...)``.

Per-call job options (``jobs.with_options(...)``), kept apart from a task's own arguments.

Plain ``saq.Queue.enqueue(name, **kw)`` treats any keyword that is a ``saq.Job`` field as
a job option, so a task parameter called ``timeout`` or ``key`` is silently swallowed.
domainjobs never mixes the two: task arguments go to ``enqueue(task, **kwargs)``, job
options to ``with_options``. They are validated once, when ``with_options`` is called.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domainjobs.errors import (
    JobOptionsError,
    did_you_mean,
)

#: option name -> accepted types. These are fields of ``saq.Job``.
JOB_OPTIONS: dict[str, tuple[type, ...]] = {
    "timeout": (int,),
    "retries": (int,),
    "ttl": (int,),
    "heartbeat": (int,),
    "retry_delay": (int, float),
    "retry_backoff": (bool, int, float),
}

#: Keys allowed in a domain's ``job_defaults``.
DOMAIN_DEFAULT_KEYS = ("queue", *JOB_OPTIONS)


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
            types = JOB_OPTIONS[key]
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
        for name in ("key", *JOB_OPTIONS, "priority", "group_key"):
            value = getattr(self, name)
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
