"""SAQ's web UI for every queue of a registry, as an ASGI app (extra ``web``).

:func:`create_app` gives a Starlette app serving SAQ's own single-page UI and JSON API
(the routes of ``saq.web.starlette``), for all the registry's queues at once, with
optional HTTP basic auth. Mount it inside your own web app::

    from starlette.routing import Mount
    from domainjobs.web import create_app

    routes = [Mount("/jobs", app=create_app("app.domain", "redis://localhost:6379"))]

Unlike ``saq.web.starlette.saq_web`` it keeps no module-level state (two apps can live in
one process) and takes its mount path from the request, so no ``root_path`` argument is
needed. ``domainjobs run --web`` serves it with uvicorn (:func:`serve`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from saq.queue import Queue

from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.discovery.builder import resolve_registry
from domainjobs.errors import ConfigError
from domainjobs.registry import DEFAULT_QUEUE, RegistryOrRoots

logger = logging.getLogger("domainjobs.web")

USER_ENV = "DOMAINJOBS_WEB_USER"
PASSWORD_ENV = "DOMAINJOBS_WEB_PASSWORD"
DEFAULT_USER = "admin"
REALM = "domainjobs"

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def credentials_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(user, password)`` from ``DOMAINJOBS_WEB_USER``/``DOMAINJOBS_WEB_PASSWORD``, or None
    when no password is set (the user defaults to ``admin``)."""
    env = os.environ if environ is None else environ
    password = env.get(PASSWORD_ENV)
    if not password:
        return None
    return env.get(USER_ENV) or DEFAULT_USER, password


class BasicAuth:
    """ASGI middleware: HTTP basic auth in front of ``app`` (401 with a challenge otherwise)."""

    def __init__(self, app: ASGIApp, username: str, password: str, realm: str = REALM) -> None:
        self.app = app
        self._user = username.encode()
        self._password = password.encode()
        self._challenge = f'Basic realm="{realm}", charset="UTF-8"'.encode()

    def allowed(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether the request's ``Authorization`` header has the right credentials."""
        for name, value in headers:
            if name.lower() != b"authorization":
                continue
            scheme, _, encoded = value.partition(b" ")
            if scheme.lower() != b"basic":
                return False
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            # compare both, always: no timing hint about which one was wrong
            user_ok = secrets.compare_digest(user, self._user)
            password_ok = secrets.compare_digest(password, self._password)
            return bool(sep) and user_ok and password_ok
        return False

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Pass authorised HTTP requests on; answer 401 to the others."""
        if scope["type"] != "http" or self.allowed(scope.get("headers", ())):
            await self.app(scope, receive, send)
            return
        body = b"401 Unauthorized: this page needs the user and password of DOMAINJOBS_WEB_*\n"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", self._challenge),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class QueueSet:
    """The queues the UI shows, connected on first use (mounted apps get no lifespan)."""

    def __init__(self, queues: Sequence[Queue]) -> None:
        self.queues = {queue.name: queue for queue in queues}
        self._connected = False
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Connect every queue once."""
        if self._connected:
            return
        async with self._lock:
            if not self._connected:
                for queue in self.queues.values():
                    await queue.connect()
                self._connected = True

    async def disconnect(self) -> None:
        """Disconnect every queue (if connected)."""
        if self._connected:
            self._connected = False
            for queue in self.queues.values():
                await queue.disconnect()


def make_queues(registry_or_roots: RegistryOrRoots, url: str | None) -> list[Queue]:
    """One queue per queue name of the registry, on the broker at ``url``."""

    registry = resolve_registry(registry_or_roots)
    broker = resolve_url(url)
    return [queue_from_url(broker, name) for name in (registry.queues or (DEFAULT_QUEUE,))]


def create_app(
    registry_or_roots: RegistryOrRoots = None,
    url: str | None = None,
    *,
    queues: Sequence[Queue] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Any:
    """SAQ's UI and API for every queue of the registry, as a Starlette (ASGI) app.

    ``queues`` replaces the registry's (pass your own ``saq.Queue`` objects). Basic auth
    is on when a password is given, or else when ``DOMAINJOBS_WEB_PASSWORD`` is set
    (user ``username``, ``DOMAINJOBS_WEB_USER`` or ``admin``).
    """
    try:
        from saq.web.common import STATIC_PATH, job_dict, render
        from saq.web.starlette import GZStaticFiles
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Mount, Route
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigError(
            f"the web UI needs the 'web' extra ({exc.name} is missing): "
            "pip install 'domainjobs[web]'"
        ) from None

    queue_set = QueueSet(
        list(queues) if queues is not None else make_queues(registry_or_roots, url)
    )

    def not_found(what: str) -> JSONResponse:
        return JSONResponse({"error": f"{what} not found"}, status_code=404)

    async def views(request: Request) -> Response:
        return Response(
            content=render(root_path=request.scope.get("root_path", "")), media_type="text/html"
        )

    async def all_info() -> list[Any]:
        await queue_set.connect()
        return [await queue.info() for queue in queue_set.queues.values()]

    async def health(request: Request) -> Response:
        await all_info()
        return Response("OK", media_type="text/plain")

    async def queues_(request: Request) -> JSONResponse:
        name = request.path_params.get("queue")
        if name is None:
            return JSONResponse({"queues": await all_info()})
        queue = queue_set.queues.get(name)
        if queue is None:
            return not_found(f"queue {name!r}")
        await queue_set.connect()
        return JSONResponse({"queue": await queue.info(jobs=True)})

    async def find_job(request: Request) -> Any:
        queue = queue_set.queues.get(request.path_params["queue"])
        if queue is None:
            return None
        await queue_set.connect()
        return await queue.job(request.path_params["job"])

    async def jobs(request: Request) -> JSONResponse:
        job = await find_job(request)
        if job is None:
            return not_found(f"job {request.path_params['job']!r}")
        return JSONResponse({"job": job_dict(job)})

    async def retry(request: Request) -> JSONResponse:
        job = await find_job(request)
        if job is None:
            return not_found(f"job {request.path_params['job']!r}")
        await job.retry("retried from ui")
        return JSONResponse({})

    async def abort(request: Request) -> JSONResponse:
        job = await find_job(request)
        if job is None:
            return not_found(f"job {request.path_params['job']!r}")
        await job.abort("aborted from ui")
        return JSONResponse({})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await queue_set.disconnect()

    app = Starlette(
        routes=[
            Route("/", views),
            Route("/queues/{queue}", views),
            Route("/queues/{queue}/jobs/{job}", views),
            Route("/api/queues", queues_),
            Route("/api/queues/{queue}", queues_),
            Route("/api/queues/{queue}/jobs/{job}", jobs),
            Route("/api/queues/{queue}/jobs/{job}/retry", retry, methods=["POST"]),
            Route("/api/queues/{queue}/jobs/{job}/abort", abort, methods=["POST"]),
            Mount("/static", GZStaticFiles(directory=STATIC_PATH)),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )
    app.state.domainjobs_queues = queue_set
    if password is None:
        found = credentials_from_env()
        if found is not None:
            username, password = username or found[0], found[1]
    if password:
        app.add_middleware(BasicAuth, username=username or DEFAULT_USER, password=password)
    return app


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


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a ``ConfigError`` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the web UI on {host}:{port} ({exc.strerror or exc}): "
            "pick another --port or --host"
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
