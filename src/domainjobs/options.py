"""SAQ job options that tasks and domains may set as defaults, and their validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domainjobs.errors import did_you_mean

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
