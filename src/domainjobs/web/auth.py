"""HTTP basic auth for the dashboard: credentials from the environment, and the middleware."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

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
        await send_plain(
            send,
            401,
            b"401 Unauthorized: this page needs the user and password of DOMAINJOBS_WEB_*\n",
            [(b"www-authenticate", self._challenge)],
        )


async def send_plain(
    send: Callable[[Any], Awaitable[None]],
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer an ASGI HTTP request with a plain-text ``body`` (for middleware refusals)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(headers or []),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
