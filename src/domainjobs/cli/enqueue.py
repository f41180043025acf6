"""``domainjobs enqueue NAME``: enqueue one task with JSON keyword arguments; ``--wait``
prints its result. Validated like ``Jobs.enqueue``: bad input exits 2 before the broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import redis.exceptions

from domainjobs.brokers.urls import redact, resolve_url
from domainjobs.cli.common import Subparsers, add_command, load
from domainjobs.client.jobs import Jobs
from domainjobs.discovery.builder import discover_configured
from domainjobs.errors import (
    DuplicateKeyError,
    JobFailedError,
    JobOptionsError,
    JobTimeoutError,
    TaskArgumentsError,
    UnknownTaskError,
    UnserializableArgumentsError,
)
from domainjobs.options import OPTIONS

HELP = """\
Enqueue one task by its public name, with keyword arguments as a JSON object. Prints the
job's key; with --wait, waits for the job and prints its result as JSON. Exit 0 when done,
1 when the job failed or the wait timed out, 2 for an unknown task or bad arguments
(nothing is enqueued then).

examples:
  python -m domainjobs enqueue accounts.send_welcome_email --kwargs '{"user_id": 1}'
  python -m domainjobs enqueue billing.charge --kwargs '{"invoice_id": 7}' --wait --timeout 30
  python -m domainjobs enqueue billing.close_books --key books-2024-06-01 --delay 60
"""

#: What a broker that is down or unreachable raises (redis-py's errors are not OSErrors).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

#: The job options ``enqueue`` takes as flags (``--key``, ``--job-timeout``, ...).
FLAG_OPTIONS = tuple(option for option in OPTIONS if option.flag)

VALIDATION_ERRORS = (
    UnknownTaskError,
    TaskArgumentsError,
    UnserializableArgumentsError,
    JobOptionsError,
    DuplicateKeyError,
)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add the ``enqueue`` command."""
    parser = add_command(
        subparsers,
        common,
        "enqueue",
        help="enqueue one task (JSON kwargs); --wait prints its result",
        doc=HELP,
    )
    parser.add_argument("name", metavar="NAME", help="the task's public name (see `list`)")
    parser.add_argument(
        "--kwargs", default="{}", metavar="JSON", help="the task's keyword arguments, a JSON object"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job, print its result")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="with --wait: give up after S seconds (exit 1)"
    )
    group = parser.add_argument_group("job options (the task's defaults apply otherwise)")
    for option in FLAG_OPTIONS:
        assert option.flag is not None
        group.add_argument(
            option.flag,
            dest=f"option_{option.name}",
            type=float if float in option.types else option.types[0],
            metavar=option.metavar,
            help=option.help,
        )
    parser.set_defaults(handler=handle)


def parse_kwargs(text: str) -> dict[str, Any]:
    """The ``--kwargs`` JSON object, or a ``TaskArgumentsError`` saying what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskArgumentsError(
            f"--kwargs is not valid JSON ({exc}); example: --kwargs '{{\"user_id\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise TaskArgumentsError(
            f"--kwargs must be a JSON object of keyword arguments, got {type(value).__name__}; "
            "example: --kwargs '{\"user_id\": 1}'"
        )
    return value


def _print_json(value: Any) -> None:
    try:
        print(json.dumps(value))
    except (TypeError, ValueError):
        print(json.dumps(repr(value)))


async def _enqueue(args: argparse.Namespace, jobs: Jobs, kwargs: dict[str, Any]) -> int:
    options: dict[str, Any] = {
        option.name: value
        for option in FLAG_OPTIONS
        if (value := getattr(args, f"option_{option.name}")) is not None
    }
    view = jobs.with_options(wait_timeout=args.timeout, **options)
    if not args.wait:
        handle = await view.enqueue(args.name, **kwargs)
        state = "enqueued" if handle.created else "already queued (same key)"
        print(f"{args.name} {state} on queue {handle.queue!r}: key {handle.key}", file=sys.stderr)
        print(handle.key)
        return 0
    result = await view.apply(args.name, **kwargs)
    _print_json(result)
    return 0


def _usage_error(exc: BaseException) -> int:
    flags = ", ".join(option.flag for option in FLAG_OPTIONS if option.flag)
    text = str(exc).replace("go in jobs.with_options(...)", f"are flags: {flags}")
    print(f"error: {text}", file=sys.stderr)
    return 2


def handle(args: argparse.Namespace) -> int:
    """Validate, enqueue, optionally wait; the exit status says how it went."""
    settings = load(args)
    registry = discover_configured(settings)
    try:
        kwargs = parse_kwargs(args.kwargs)
        registry.task(args.name)
    except VALIDATION_ERRORS as exc:
        return _usage_error(exc)
    url = resolve_url(None, settings)

    async def main() -> int:
        async with Jobs(registry, url=url) as jobs:
            return await _enqueue(args, jobs, kwargs)

    try:
        return asyncio.run(main())
    except VALIDATION_ERRORS as exc:
        return _usage_error(exc)
    except JobTimeoutError:
        print(
            f"error: {args.name} did not finish within {args.timeout:g}s (the job goes on; "
            "see `python -m domainjobs status`)",
            file=sys.stderr,
        )
        return 1
    except JobFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BROKER_ERRORS as exc:
        print(
            f"error: broker {redact(url)} is unreachable ({exc}); start it or fix --url "
            "(DOMAINJOBS_URL)",
            file=sys.stderr,
        )
        return 1
