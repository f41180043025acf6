"""``domainjobs check``: discovery plus every validation, no broker needed."""

from __future__ import annotations

import argparse
import sys

from domainjobs.cli.common import Subparsers, add_command, load, validate_settings
from domainjobs.discovery.builder import discover_configured

HELP = """\
Discover every domain and validate it, and every setting `run` would refuse (broker URL,
cron_tz, queues, metrics_port), without touching a broker: exit 0 when clean (warnings,
such as a domain whose jobs define nothing, are printed but do not fail it), 2 with every
problem listed on stderr. Run it in CI before deploying.

example:
  python -m domainjobs check --roots app.domain,plugins.domains
"""


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add the ``check`` command."""
    parser = add_command(
        subparsers, common, "check", help="validate discovery without a broker (for CI)", doc=HELP
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Discover, and say what was found on stderr."""
    settings = load(args)
    validate_settings(settings)  # what run would refuse, before the slower discovery
    registry = discover_configured(settings)
    validate_settings(settings, registry)
    for warning in registry.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    job_hooks = len(registry.before_job) + len(registry.after_job)
    print(
        f"ok: {len(registry.domains)} domain(s), {len(registry.tasks)} task(s), "
        f"{len(registry.crons)} cron job(s), {len(registry.startup)} startup and "
        f"{len(registry.shutdown)} shutdown hook(s)"
        + (f", {job_hooks} before/after-job hook(s)" if job_hooks else "")
        + f"; queues: {', '.join(registry.queues) or '-'}",
        file=sys.stderr,
    )
    return 0
