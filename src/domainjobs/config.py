"""Settings, from four places in this order of precedence:

command-line flag > ``DOMAINJOBS_*`` environment variable > ``[tool.domainjobs]`` in the
app's ``pyproject.toml`` > built-in default.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any

from domainjobs.errors import ConfigError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "DOMAINJOBS_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting domainjobs reads. Field names are the ``pyproject.toml`` keys; the
    environment variable is ``DOMAINJOBS_`` + the name in upper case."""

    roots: tuple[str, ...] = ("app.domain",)
    url: str | None = None
    app_dir: str = "."
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    concurrency: int = 10
    cron_tz: str = "UTC"
    data_dir: str = ".domainjobs"
    entry_points: bool = True
    connect_timeout: int = 30  # seconds run waits for an unreachable broker (brokers.py)
    embedded: bool = True  # no URL: start/attach the embedded broker (embedded.py)
    metrics_port: int | None = None  # run serves /metrics there (observability/cli.py)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}

#: Settings that are TCP port numbers (0: any free port, as with ``--metrics-port 0``).
PORT_FIELDS = frozenset({"metrics_port"})


def _port_number(value: Any) -> int:
    """A TCP port number from TOML (an integer) or the environment (digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(value)
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(value)
    return number


def _coerce(name: str, value: Any, source: str) -> Any:
    default = FIELDS[name].default
    kind = type(default)
    try:
        if name in PORT_FIELDS:
            return _port_number(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if isinstance(default, int):
            number = int(value)
            if number < 1:
                raise ValueError(value)
            return number
        if value is None or kind is type(None) or isinstance(value, str):
            return None if value in (None, "") else str(value)
        raise ValueError(value)
    except (TypeError, ValueError):
        expected = {tuple: "a list or comma-separated string", bool: "true or false"}.get(
            kind, "a positive whole number" if kind is int else "a string"
        )
        if name in PORT_FIELDS:
            expected = "a port number 0-65535"
        raise ConfigError(f"{source}: {name} must be {expected}, got {value!r}") from None


def find_pyproject(app_dir: str) -> Path | None:
    """The ``pyproject.toml`` of ``app_dir`` or of its nearest parent that has one."""
    here = Path(app_dir).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def pyproject_settings(app_dir: str) -> dict[str, Any]:
    """The validated ``[tool.domainjobs]`` table; an unknown key is a ``ConfigError``."""
    path = find_pyproject(app_dir)
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as TOML ({exc})") from None
    table = data.get("tool", {}).get("domainjobs", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.domainjobs] must be a table")
    result = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in FIELDS or name == "app_dir":
            allowed = sorted(set(FIELDS) - {"app_dir"})
            raise ConfigError(
                f"{path}: unknown key {key!r} in [tool.domainjobs]"
                f"{did_you_mean(name, allowed) or '; known keys: ' + ', '.join(allowed)}"
            )
        result[name] = _coerce(name, value, f"{path} [tool.domainjobs]")
    return result


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``DOMAINJOBS_*`` variables (unknown ``DOMAINJOBS_*`` names are ignored:
    other tools, tests among them, use the prefix too)."""
    result = {}
    for name in FIELDS:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            result[name] = _coerce(name, raw, f"environment variable {ENV_PREFIX}{name.upper()}")
    return result


def load_settings(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve settings from flags (None values mean "not given"), environment, pyproject."""
    given = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    env = env_settings(os.environ if environ is None else environ)
    app_dir = str(given.get("app_dir") or env.get("app_dir") or Settings.app_dir)
    merged = {**pyproject_settings(app_dir), **env}
    merged.update({k: _coerce(k, v, f"--{k.replace('_', '-')}") for k, v in given.items()})
    merged["app_dir"] = app_dir
    return Settings(**merged)


def apply_app_dir(settings: Settings) -> None:
    """Put the app directory first on ``sys.path`` so its packages import."""
    path = str(Path(settings.app_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def cron_timezone(name: str) -> tzinfo:
    """The ``tzinfo`` for an IANA zone name such as ``Europe/Paris`` (``UTC`` by default)."""
    if name.upper() == "UTC":
        return timezone.utc
    # start-up cost: zoneinfo (and the sysconfig it reads the zone folders from) is about
    # 0.3 MiB that a worker without a named time zone would keep for nothing
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"cron_tz {name!r} is not a known time zone; use an IANA name like 'Europe/Paris'"
        ) from None
