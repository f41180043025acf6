"""Serving the dashboard from ``domainjobs run --web``: who may see it, the listening socket,
and uvicorn inside the runner's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

from domainjobs.errors import ConfigError
from domainjobs.web.auth import PASSWORD_ENV, USER_ENV


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, has_auth: bool, insecure: bool) -> None:
    """Refuse to serve the UI beyond this machine without basic auth (unless ``insecure``)."""
    if has_auth or insecure or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve the web UI on {host} without a password: set {USER_ENV} and "
        f"{PASSWORD_ENV}, or bind to 127.0.0.1, or pass --web-insecure if something in front "
        "of it already checks who may see it"
    )


def bind(
    host: str,
    port: int,
    *,
    what: str = "the web UI",
    fix: str = "pick another --port or --host",
) -> socket.socket:
    """A listening socket on ``host:port``, or a ``ConfigError`` saying why not: "cannot
    serve ``what`` on host:port (reason): ``fix``"."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve {what} on {host}:{port} ({exc.strerror or exc}): {fix}"
        ) from None
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _no_signal_capture() -> Iterator[None]:
    yield


async def serve(app: Any, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` with uvicorn on ``sock`` in this event loop until ``stop`` is set.

    Signals stay with the caller (the worker runner or the supervisor), not uvicorn.
    """
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ConfigError(
            "the web UI needs the 'web' extra: pip install 'domainjobs[web]'"
        ) from None

    class Server(uvicorn.Server):
        def capture_signals(self) -> Any:
            return _no_signal_capture()

    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopper.cancel()
        await serving
