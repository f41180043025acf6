"""``domainjobs run``'s metrics options: ``--metrics-port``/``--metrics-host``, and how the
worker processes of ``--processes N`` share one ``/metrics``.

The port is also the ``metrics_port`` setting (``DOMAINJOBS_METRICS_PORT``, ``metrics_port``
in ``[tool.domainjobs]``); the flag wins, as for every setting (``use_setting``).

- One process: it records its jobs and serves ``/metrics`` on the port itself.
- ``--web-only``: no workers; the port serves the per-queue gauges read from the broker.
- A supervisor: it makes a folder for prometheus-client's multi-process mode (or uses
  ``PROMETHEUS_MULTIPROC_DIR`` when set), passes it to every child (hidden option
  ``--metrics-dir``), serves the sum of all children's samples on the port (and at the web
  UI's ``/metrics``), and removes the folder it made when it stops.

Metrics are recorded when a port is given, or with ``--web`` when prometheus-client is
installed. Otherwise nothing of prometheus-client is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Coroutine, Sequence
from typing import Any

from domainjobs.brokers.urls import queue_from_url
from domainjobs.config import Settings
from domainjobs.errors import ConfigError
from domainjobs.observability import state
from domainjobs.registry import DEFAULT_QUEUE, Registry

logger = logging.getLogger("domainjobs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the metrics options to ``run``."""
    group = parser.add_argument_group("metrics (extra 'metrics')")
    group.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (one port for all "
        "processes); DOMAINJOBS_METRICS_PORT",
    )
    group.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address of the metrics port (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    group.add_argument("--metrics-dir", help=argparse.SUPPRESS)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value}")
    return value


def use_setting(args: argparse.Namespace, settings: Settings) -> None:
    """Serve the port the settings give (flag, environment or pyproject). A supervised
    worker process never does: its supervisor serves the sum of every child's metrics."""
    supervised = getattr(args, "supervised_by", None) is not None
    args.metrics_port = None if supervised else settings.metrics_port


def require_extra(settings: Settings) -> None:
    """The ``ConfigError`` ``run`` raises when a metrics port is set but prometheus-client
    is not installed (``check`` raises it too, without starting anything)."""
    if settings.metrics_port is not None:
        _require_extra()


def wanted(args: argparse.Namespace) -> bool:
    """Whether this run records metrics (see the module docstring)."""
    if args.metrics_port is not None or args.metrics_dir:
        return True
    return bool(getattr(args, "web", False)) and state.metrics_available()


def _require_extra() -> None:
    if not state.metrics_available():
        raise ConfigError(
            "a metrics port (--metrics-port, DOMAINJOBS_METRICS_PORT or metrics_port in "
            "[tool.domainjobs]) needs the 'metrics' extra (prometheus-client is missing): "
            "pip install 'domainjobs[metrics]', or unset it"
        )


def prepare_worker(args: argparse.Namespace) -> None:
    """In a process that runs workers: turn metrics on (before the workers are built)."""
    if args.metrics_dir:
        # before prometheus-client is imported: it picks its storage at import time
        os.environ[state.MULTIPROC_ENV] = args.metrics_dir
    if not wanted(args):
        return
    _require_extra()
    state.enable_metrics()


def prepare_supervisor(args: argparse.Namespace) -> None:
    """In a supervisor: choose the children's shared metrics folder (before their command
    line is made)."""
    if not wanted(args):
        return
    if args.metrics_port is not None:
        _require_extra()
    folder = state.multiprocess_dir()
    if folder is None:
        folder = tempfile.mkdtemp(prefix="domainjobs-metrics-")
        args.metrics_dir_created = True
        os.environ[state.MULTIPROC_ENV] = folder
    args.metrics_dir = folder


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The metrics options of a supervised child's command line."""
    return ["--metrics-dir", args.metrics_dir] if args.metrics_dir else []


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for the metrics port, or a ``ConfigError`` saying why not."""
    # start-up cost: importing domainjobs.web loads the dashboard's modules, which a worker
    # without --metrics-port or --web never uses
    from domainjobs.web.serving import bind as bind_listener

    return bind_listener(
        host, port, what="metrics", fix="pick another --metrics-port or --metrics-host"
    )


class _Queues:
    """The registry's queues for the gauges, connected on the first scrape."""

    def __init__(self, names: Sequence[str], url: str) -> None:
        self.queues = [queue_from_url(url, name) for name in names]
        self._connected = False
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        async with self._lock:
            if not self._connected:
                for queue in self.queues:
                    await queue.connect()
                self._connected = True

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            for queue in self.queues:
                await queue.disconnect()


async def serving(
    args: argparse.Namespace, registry: Registry, url: str, body: Coroutine[Any, Any, int]
) -> int:
    """Run ``body`` with the metrics port served beside it (when ``--metrics-port``); then
    remove the metrics folder this process made, if any."""
    try:
        if args.metrics_port is None:
            return await body
        try:
            # the 'metrics' extra (checked by prepare_worker/prepare_supervisor)
            from domainjobs.observability.exposition import QueueGauges
            from domainjobs.observability.server import MetricsServer

            sock = bind(args.metrics_host, args.metrics_port)
        except BaseException:
            body.close()
            raise
        queues = _Queues(list(registry.queues) or [DEFAULT_QUEUE], url)
        server = MetricsServer(sock, QueueGauges(queues.queues), queues.connect)
        stop = asyncio.Event()
        serve = asyncio.create_task(server.serve(stop))
        host, port = sock.getsockname()[:2]
        logger.info("metrics on http://%s:%d/metrics", host, port)
        try:
            return await body
        finally:
            stop.set()
            await serve
            await queues.disconnect()
    finally:
        if getattr(args, "metrics_dir_created", False):
            shutil.rmtree(args.metrics_dir, ignore_errors=True)
