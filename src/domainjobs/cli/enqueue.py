"""``domainjobs enqueue NAME``: enqueue one task with JSON keyword arguments; ``--wait``
prints its result. Validated like ``Jobs.enqueue``: bad input exits 2 before the broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import redis.exceptions

from domainjobs.brokers.urls import redact, resolve_url
from domainjobs.cli.common import Subparsers, add_command, load
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

if TYPE_CHECKING:
    from domainjobs.client.jobs import Jobs

HELP = """\
Enqueue one task by its public name, with keyword arguments as a JSON object. Prints the
job's key; with --wait, waits for the job and prints its result as JSON. Exit 0 when done,
1 when the job failed or the wait timed out, 2 for an unknown task or bad arguments
(nothing is enqueued then).

With --many FILE it enqueues one job per line of FILE (a JSON object of keyword
arguments per line; - reads standard input): every line is checked first, then the jobs
are sent in pipelined batches, and one key per line is printed.

examples:
  python -m domainjobs enqueue accounts.send_welcome_email --kwargs '{"user_id": 1}'
  python -m domainjobs enqueue accounts.send_welcome_email --many users.jsonl
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
    parser.add_argument(
        "--many",
        metavar="FILE",
        help="one job per line of FILE (JSON objects; - for stdin), sent in batches",
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


def _json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    """``text`` as a JSON object, or None and what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"must be a JSON object of keyword arguments, got {type(value).__name__}"
    return value, ""


def parse_kwargs(text: str) -> dict[str, Any]:
    """The ``--kwargs`` JSON object, or a ``TaskArgumentsError`` saying what is wrong."""
    value, why = _json_object(text)
    if value is None:
        raise TaskArgumentsError(f"--kwargs {why}; example: --kwargs '{{\"user_id\": 1}}'")
    return value


def read_many(source: str) -> list[dict[str, Any]]:
    """The ``--many`` file's objects, one per non-blank line; a ``TaskArgumentsError``
    names the first bad line."""
    try:
        if source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(source, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
    except OSError as exc:
        raise TaskArgumentsError(f"--many cannot read {source!r} ({exc.strerror})") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        value, why = _json_object(line)
        if value is None:
            raise TaskArgumentsError(
                f"--many {source!r} line {number} {why}; write one JSON object per line, "
                'e.g. {"user_id": 1}'
            )
        items.append(value)
    return items


def _print_json(value: Any) -> None:
    try:
        print(json.dumps(value))
    except (TypeError, ValueError):
        print(json.dumps(repr(value)))


async def _enqueue(
    args: argparse.Namespace,
    jobs: Jobs,
    kwargs: dict[str, Any],
    many: list[dict[str, Any]],
) -> int:
    options: dict[str, Any] = {
        option.name: value
        for option in FLAG_OPTIONS
        if (value := getattr(args, f"option_{option.name}")) is not None
    }
    view = jobs.with_options(wait_timeout=args.timeout, **options)
    if args.many is not None:
        handles = await view.enqueue_many(args.name, many)
        queue = handles[0].queue if handles else jobs.spec(args.name).queue
        print(f"{args.name}: {len(handles)} job(s) enqueued on queue {queue!r}", file=sys.stderr)
        for one in handles:
            print(one.key)
        return 0
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
        many: list[dict[str, Any]] = []
        if args.many is not None:
            if args.wait or args.option_key or kwargs:
                raise TaskArgumentsError(
                    "--many takes each job's arguments from its file, so it cannot be "
                    "combined with --kwargs, --key or --wait"
                )
            many = read_many(args.many)
        registry.task(args.name)
    except VALIDATION_ERRORS as exc:
        return _usage_error(exc)
    url = resolve_url(None, settings)

    async def main() -> int:
        # start-up cost: `run` imports this module for its parser, not the client
        from domainjobs.client.jobs import Jobs

        async with Jobs(registry, url=url) as jobs:
            return await _enqueue(args, jobs, kwargs, many)

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
