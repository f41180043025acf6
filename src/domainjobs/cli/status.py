"""``domainjobs status``: per queue, queued/active/scheduled/failed counts and live workers.

``collect``, ``render`` and ``as_json`` are separate so other commands (``status --check``)
can reuse them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from domainjobs.brokers.urls import redact
from domainjobs.cli.common import (
    Subparsers,
    add_command,
    broker_not_running,
    load,
    running_broker_url,
)
from domainjobs.cli.enqueue import BROKER_ERRORS
from domainjobs.discovery.builder import discover_configured
from domainjobs.errors import ConfigError, ExitCode, did_you_mean
from domainjobs.registry import Registry

if TYPE_CHECKING:
    from domainjobs.client.status import QueueStatus

HELP = """\
Show each queue's queued, active, scheduled and failed job counts and its live workers
(workers report every 10 s; one that stopped reporting drops out after its TTL). "failed"
counts failed jobs the broker still keeps (their ttl, 600 s by default). --json prints
only JSON to stdout. Read-only: with no URL configured and the embedded broker not
running, it says so and exits 3 (--check: 1) rather than start it.

examples:
  python -m domainjobs status
  python -m domainjobs status -q billing --json
"""

COLUMNS = ("queue", "queued", "active", "scheduled", "failed", "workers")


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add the ``status`` command."""
    parser = add_command(
        subparsers, common, "status", help="queue counts and live workers", doc=HELP
    )
    parser.add_argument(
        "-q", "--queue", dest="queues", action="append", help="only this queue (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 only if a live worker serves every selected queue (liveness probes)",
    )
    parser.set_defaults(handler=handle)


def pick_queues(registry: Registry, wanted: Sequence[str] | None) -> list[str]:
    """The queues to report: ``wanted`` (each must be a discovered queue) or all."""
    known = list(registry.queues) or ["default"]
    for name in wanted or ():
        if name not in known:
            raise ConfigError(
                f"no discovered task uses queue {name!r}{did_you_mean(name, known)}; "
                f"queues: {', '.join(known)}"
            )
    return list(wanted) if wanted else known


async def collect(registry: Registry, url: str, queues: Sequence[str]) -> list[QueueStatus]:
    """Read every queue's status from the broker."""
    # start-up cost: `run` imports this module for its parser, not the client
    from domainjobs.client.jobs import Jobs

    async with Jobs(registry, url=url) as jobs:
        return await jobs.status(queues)


def as_json(statuses: Sequence[QueueStatus], url: str) -> dict[str, Any]:
    """The ``--json`` document."""
    return {"broker": redact(url), "queues": [s.to_dict() for s in statuses]}


def render(statuses: Sequence[QueueStatus], url: str) -> str:
    """The human table, one row per queue, then each queue's live workers."""
    rows = [COLUMNS] + [
        (
            s.name,
            str(s.queued),
            str(s.active),
            str(s.scheduled),
            str(s.failed),
            str(len(s.workers)),
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"broker: {redact(url)}"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    for s in statuses:
        for worker in s.workers:
            stats = worker.stats
            lines.append(
                f"  {s.name} worker {worker.id}: up {int(stats.get('uptime', 0)) // 1000}s, "
                f"{stats.get('complete', 0)} complete, {stats.get('failed', 0)} failed, "
                f"{stats.get('retried', 0)} retried, {stats.get('aborted', 0)} aborted"
            )
    if not any(s.workers for s in statuses):
        lines.append("no live workers: start them with `python -m domainjobs run`")
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    """Read the counts and print them."""
    settings = load(args)
    registry = discover_configured(settings)
    queues = pick_queues(registry, args.queues)
    url = running_broker_url(settings)
    if url is None:  # read-only: the embedded broker is not started just to be read
        if args.check:
            print(f"unhealthy: {broker_not_running(settings)}", file=sys.stderr)
            return ExitCode.FAILURE
        print(broker_not_running(settings), file=sys.stderr)
        return ExitCode.NOT_RUNNING
    if args.check:  # cheap enough for a container probe (no job scan)
        from domainjobs.client.health import run_check  # start-up cost, as in collect

        return run_check(url, queues)
    try:
        statuses = asyncio.run(collect(registry, url, queues))
    except BROKER_ERRORS as exc:
        print(
            f"error: broker {redact(url)} is unreachable ({exc}); start it or fix --url "
            "(DOMAINJOBS_URL)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        json.dump(as_json(statuses, url), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(statuses, url))
    return 0
