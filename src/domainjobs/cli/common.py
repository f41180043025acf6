"""What every command shares: its common options, then settings, sys.path, discovery."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TypeAlias

from domainjobs.brokers.embedded import BrokerPaths, ping
from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.config import Settings, apply_app_dir, cron_timezone, load_settings
from domainjobs.discovery.builder import discover
from domainjobs.errors import ConfigError, did_you_mean
from domainjobs.observability import cli as metrics_cli
from domainjobs.registry import DEFAULT_QUEUE, Registry


def common_options() -> argparse.ArgumentParser:
    """Options every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("discovery and broker")
    group.add_argument(
        "--roots",
        help="comma-separated domains roots (default app.domain); DOMAINJOBS_ROOTS",
    )
    group.add_argument(
        "--url",
        help="broker URL (redis://, rediss://, unix://, postgresql://); DOMAINJOBS_URL",
    )
    group.add_argument(
        "--app-dir",
        help="directory put first on sys.path, where pyproject.toml is read (default .)",
    )
    group.add_argument(
        "--include", action="append", help="only these domains (pattern, repeatable)"
    )
    group.add_argument(
        "--exclude", action="append", help="skip these domains (pattern, repeatable)"
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks")
    return common


#: The object ``add_subparsers`` returns (argparse keeps its class private).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    subparsers: Subparsers, common: argparse.ArgumentParser, name: str, *, help: str, doc: str
) -> argparse.ArgumentParser:
    """Add sub-command ``name`` with the common options and ``doc`` (its worked examples)
    shown verbatim by ``--help``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        parents=[common],
        help=help,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def settings_flags(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The settings the user gave as flags (None where not given)."""
    flags = {
        "roots": args.roots,
        "url": args.url,
        "app_dir": args.app_dir,
        "include": tuple(args.include) if args.include else None,
        "exclude": tuple(args.exclude) if args.exclude else None,
    }
    for name in names:
        flags[name] = getattr(args, name, None)
    return flags


def load(args: argparse.Namespace, *extra_flags: str) -> Settings:
    """Settings from flags, environment and pyproject; the app dir goes onto sys.path."""
    settings = load_settings(settings_flags(args, *extra_flags))
    apply_app_dir(settings)
    return settings


def discover_configured(settings: Settings) -> Registry:
    """Discovery with the configured roots and domain filters."""
    return discover(
        settings.roots,
        include=settings.include,
        exclude=settings.exclude,
        entry_points=settings.entry_points,
    )


def validate_settings(settings: Settings, registry: Registry | None = None) -> None:
    """Raise the ``ConfigError`` ``run`` would raise for these settings, without connecting
    to anything: a malformed or unsupported broker URL, an unknown ``cron_tz``, a metrics
    port without the 'metrics' extra, and (given the registry) a configured queue that no
    task uses. (A malformed value of any setting is refused earlier, by ``load``.)"""
    if settings.url:
        queue_from_url(settings.url, DEFAULT_QUEUE)  # parsed and built, never connected
    cron_timezone(settings.cron_tz)
    metrics_cli.require_extra(settings)
    if registry is not None:
        for name in settings.queues:
            if name not in registry.queues:
                raise ConfigError(
                    f"no discovered task uses queue {name!r}"
                    f"{did_you_mean(name, registry.queues)}; "
                    f"queues: {', '.join(registry.queues) or '-'}"
                )


def running_broker_url(settings: Settings) -> str | None:
    """The broker a read-only command (``status``) reads: the configured URL, else the
    embedded broker if it is running. ``None`` when it is not: a read-only command never
    starts it (``run``, ``enqueue`` and ``broker start`` do)."""
    if settings.url or not settings.embedded or sys.platform == "win32":
        return resolve_url(None, settings)  # the configured URL, or resolve_url's own error
    paths = BrokerPaths.for_settings(settings)
    if ping(paths.client_socket()) != "ok":
        return None
    return paths.url()


def broker_not_running(settings: Settings) -> str:
    """The sentence a read-only command prints when the embedded broker is not running."""
    folder = BrokerPaths.for_settings(settings).folder
    return (
        f"the embedded broker is not running (data in {folder}), so no job is queued or "
        "running; `python -m domainjobs run` starts it (as do `enqueue` and `broker start`)"
    )
