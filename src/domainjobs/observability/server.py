"""A worker's own ``/metrics`` port (``run --metrics-port``): a small HTTP/1.1 server on the
worker's event loop, so a scrape reads the broker with the same async client the workers
use, and needs neither the web extra nor a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from domainjobs.observability.exposition import QueueGauges, render

logger = logging.getLogger("domainjobs.observability")

#: Longest a client may take to send its request head, and its largest size.
READ_TIMEOUT = 10.0
MAX_HEAD = 16384

INDEX = b"domainjobs metrics: see /metrics\n"


def _response(status: str, body: bytes, content_type: str, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


class MetricsServer:
    """Serves ``GET /metrics`` (job metrics and the gauges of ``gauges``) on ``sock``."""

    def __init__(
        self,
        sock: socket.socket,
        gauges: QueueGauges | None,
        connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.sock = sock
        self.gauges = gauges
        self.connect = connect
        self.scrapes = 0

    async def _page(self, method: str, path: str) -> bytes:
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"GET /metrics\n", "text/plain")
        if path == "/metrics":
            if self.connect is not None:
                await self.connect()
            body, content_type = await render(self.gauges)
            self.scrapes += 1
            return _response("200 OK", body, content_type, head_only)
        if path == "/":
            return _response("200 OK", INDEX, "text/plain; charset=utf-8", head_only)
        return _response("404 Not Found", b"not found: see /metrics\n", "text/plain", head_only)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            page = await self._page(method, target.split("?", 1)[0])
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.TimeoutError,  # not the builtin TimeoutError before Python 3.11
            ValueError,
        ):
            page = _response("400 Bad Request", b"bad request\n", "text/plain")
        except Exception:
            logger.exception("metrics: the scrape failed")
            page = _response("500 Internal Server Error", b"scrape failed\n", "text/plain")
        try:
            writer.write(page)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        server = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_HEAD)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
