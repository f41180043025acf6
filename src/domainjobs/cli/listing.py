"""``domainjobs list``: what was discovered, grouped by domain (``--json`` for machines)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from domainjobs.cli.common import Subparsers, add_command, load, validate_settings
from domainjobs.cli.describe import describe_registry
from domainjobs.config import cron_timezone
from domainjobs.discovery.builder import discover_configured

HELP = """\
Show every discovered domain: its tasks with queue and options, its cron jobs with their
next run times, and its startup/shutdown hooks. --json prints only JSON to stdout.

example:
  python -m domainjobs list --roots app.domain
  python -m domainjobs list --json | jq '.domains[].tasks[].name'
"""


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add the ``list`` command."""
    parser = add_command(
        subparsers, common, "list", help="show discovered tasks, cron jobs and hooks", doc=HELP
    )
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")
    parser.set_defaults(handler=handle)


def _options(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def render(data: dict[str, Any]) -> str:
    """The human listing."""
    lines = [f"roots: {', '.join(data['roots'])}", f"queues: {', '.join(data['queues']) or '-'}"]
    for domain in data["domains"]:
        lines.append("")
        lines.append(f"{domain['name']}  ({domain['package']}, default queue {domain['queue']})")
        for task in domain["tasks"]:
            extra = _options(task["options"])
            lines.append(
                f"  task     {task['name']}  queue={task['queue']}"
                + (f"  {extra}" if extra else "")
                + f"  [{task['file']}:{task['line']}]"
            )
        for cron in domain["crons"]:
            lines.append(
                f"  cron     {cron['name']}  '{cron['cron']}'  next: {', '.join(cron['next_runs'])}"
            )
        for hook in domain["startup"]:
            lines.append(f"  startup  {hook['name']}  [{hook['file']}:{hook['line']}]")
        for hook in domain["shutdown"]:
            lines.append(f"  shutdown {hook['name']}  [{hook['file']}:{hook['line']}]")
        for kind, label in (("before_job", "before"), ("after_job", "after")):
            for hook in domain[kind]:
                scope = "every job" if hook["all_domains"] else f"{domain['name']} jobs"
                lines.append(
                    f"  {label:<8} {hook['name']}  ({scope})  [{hook['file']}:{hook['line']}]"
                )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    """Discover and print."""
    settings = load(args)
    validate_settings(settings)
    data = describe_registry(discover_configured(settings), cron_timezone(settings.cron_tz))
    for warning in data["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(data))
    return 0
