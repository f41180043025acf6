"""The cron time zone setting (``cron_tz``): UTC unless configured."""

from __future__ import annotations

from datetime import timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domainjobs.errors import ConfigError


def cron_timezone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA zone name such as ``Europe/Paris`` (``UTC`` by default)."""
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"cron_tz {name!r} is not a known time zone; use an IANA name like 'Europe/Paris'"
        ) from None
