"""``domainjobs run``: discover, build one SAQ worker per queue, run until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging

from domainjobs.brokers import redact
from domainjobs.cli.common import discover_from, load, setup_logging
from domainjobs.config import resolve_url
from domainjobs.errors import ConfigError, did_you_mean
from domainjobs.runner import run_workers
from domainjobs.timezones import cron_timezone
from domainjobs.worker import build_workers

logger = logging.getLogger("domainjobs")

HELP = """\
Discover every domain, build one saq.Worker per queue and run them all in this process
until SIGINT/SIGTERM (running jobs finish first). --burst drains the queues and exits 0.

examples:
  python -m domainjobs run --url redis://localhost:6379
  python -m domainjobs run -q mail --concurrency 50
  python -m domainjobs run --burst            # process what is queued, then exit
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Add the ``run`` command."""
    parser = subparsers.add_parser(
        "run",
        parents=[common],
        help="run workers for the discovered jobs",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-q", "--queue", dest="queues", action="append", help="serve this queue (repeatable; default all)"
    )
    parser.add_argument("--concurrency", type=int, help="jobs run at once per queue (default 10)")
    parser.add_argument("--burst", action="store_true", help="process what is queued, then exit 0")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the workers; the exit status says whether everything stopped cleanly."""
    settings = load(args, "concurrency")
    if args.queues:
        settings = settings.replace(queues=tuple(args.queues))
    setup_logging(args.debug)
    registry = discover_from(settings)
    for name in settings.queues:
        if name not in registry.queues:
            raise ConfigError(
                f"no discovered task uses queue {name!r}{did_you_mean(name, registry.queues)}; "
                f"queues: {', '.join(registry.queues) or '-'}"
            )
    url = resolve_url(None, settings)
    workers = build_workers(
        registry,
        queues=settings.queues or None,
        url=url,
        concurrency=settings.concurrency,
        burst=args.burst,
        cron_tz=cron_timezone(settings.cron_tz),
    )
    logger.info(
        "domainjobs: %d task(s) in %d domain(s); serving queue(s) %s on %s",
        len(registry.tasks),
        len(registry.domains),
        ", ".join(w.queue.name for w in workers),
        redact(url),
    )
    return asyncio.run(run_workers(workers, connect_timeout=settings.connect_timeout))
