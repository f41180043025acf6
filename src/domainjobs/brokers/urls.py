"""Turn a broker URL into SAQ queues, wait for a broker that is not up yet, and keep
passwords out of everything we print.

Accepted URLs (docs/brokers.md): ``redis://``, ``rediss://`` (TLS), ``unix://`` socket paths,
``valkey://``/``valkeys://`` (the same protocol), and ``postgresql://``/``postgres://``
(SAQ's ``PostgresQueue``, extra ``postgres``). Anything else is a ``ConfigError`` that lists
these forms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from saq.queue import Queue

from domainjobs.brokers.embedded import embedded_url
from domainjobs.brokers.redis import SweepSafeRedisQueue
from domainjobs.config import Settings, load_settings
from domainjobs.errors import (
    BrokerUnreachableError,
    ConfigError,
)

logger = logging.getLogger("domainjobs")

ACCEPTED_FORMS = (
    "redis://[[user]:password@]host[:port][/db]",
    "rediss://... (TLS)",
    "unix:///path/to/redis.sock[?db=N]",
    "valkey://... and valkeys://... (same as redis:// and rediss://)",
    "postgresql://[user[:password]@]host[:port]/dbname (extra 'postgres')",
)

REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")
POSTGRES_SCHEMES = ("postgresql", "postgres")
SECRET_QUERY_KEYS = ("password", "pass", "passwd", "sslpassword")

#: Seconds between connection attempts: the first retry, then doubled up to the cap.
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 5.0


def _secrets(url: str) -> list[str]:
    """Every password-like value in ``url`` (raw and decoded), longest first."""
    try:
        parts = urlsplit(url)
        found = []
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for key, value in parse_qsl(parts.query, keep_blank_values=False):
            if key.lower() in SECRET_QUERY_KEYS and value:
                found += [value, quote(value, safe="")]
    except ValueError:
        return []
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact(url: str) -> str:
    """``url`` with any password (in the user part or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    changed = False
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:***@{host}")
        changed = True
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
        query = urlencode(
            [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*/"
        )
        parts = parts._replace(query=query)
        changed = True
    if not changed:
        return url
    text = urlunsplit(parts)
    if not parts.netloc and url.startswith(f"{parts.scheme}:///"):
        text = text.replace(f"{parts.scheme}:", f"{parts.scheme}://", 1)  # keep unix:///path
    return text


def scrub(text: str, url: str) -> str:
    """``text`` (say, an error message) with ``url``'s passwords replaced by ``***``."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def bad_url(url: str, why: str) -> ConfigError:
    """A ``ConfigError`` for ``url`` (redacted) listing the accepted forms."""
    return ConfigError(
        f"broker URL {redact(url)!r} {why}; accepted forms: " + ", ".join(ACCEPTED_FORMS)
    )


def _scheme(url: str) -> str:
    if "://" not in url:
        raise bad_url(url, "is not a URL (it has no scheme://)")
    try:
        return urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise bad_url(url, f"cannot be parsed ({exc})") from None


def _redis_queue(url: str, name: str, queue_kwargs: dict[str, Any]) -> Queue:
    import redis.asyncio as aioredis

    scheme = _scheme(url)
    original = url
    if scheme.startswith("valkey"):
        url = "redis" + url[len("valkey") :]
    parts = urlsplit(url)
    if scheme == "unix":
        host = parts.netloc.rsplit("@", 1)[-1]
        if not parts.path.startswith("/") or host not in ("", "localhost"):
            raise bad_url(original, "needs an absolute socket path, as in unix:///run/redis.sock")
    elif not parts.hostname:
        raise bad_url(original, "has no host")
    elif parts.path not in ("", "/") and not parts.path.strip("/").isdigit():
        raise bad_url(original, f"has a database {parts.path.strip('/')!r} that is not a number")
    try:
        client = aioredis.from_url(url)
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)  # unknown ?options fail here, not later
    except (ValueError, TypeError) as exc:
        raise bad_url(original, f"is not valid ({scrub(str(exc), original)})") from None
    return SweepSafeRedisQueue(client, name=name, **queue_kwargs)


def _postgres_queue(url: str, name: str, queue_kwargs: dict[str, Any]) -> Queue:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            f"broker URL {redact(url)!r} needs PostgreSQL support: "
            "pip install 'domainjobs[postgres]'"
        ) from None
    from psycopg import ProgrammingError

    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise bad_url(url, f"is not valid ({scrub(str(exc), url)})") from None
    port = str(params.get("port") or "5432")
    if not all(p.strip().isdigit() for p in port.split(",")):
        raise bad_url(url, f"has a port {port!r} that is not a number")
    from domainjobs.brokers.pgnotify import NotifyingPostgresQueue  # psycopg: optional extra

    queue: Queue = NotifyingPostgresQueue.from_url(url, name=name, **queue_kwargs)
    return queue


def queue_from_url(url: str, name: str, **queue_kwargs: Any) -> Queue:
    """A SAQ queue called ``name`` on the broker at ``url`` (not connected yet).

    A malformed or unsupported URL raises ``ConfigError`` naming the accepted forms.
    """
    scheme = _scheme(url)
    if scheme in REDIS_SCHEMES:
        return _redis_queue(url, name, queue_kwargs)
    if scheme in POSTGRES_SCHEMES:
        return _postgres_queue(url, name, queue_kwargs)
    raise bad_url(url, f"has an unsupported scheme {scheme!r}")


def describe(queue: Queue) -> str:
    """A password-free description of where ``queue`` lives, for log lines."""
    redis = getattr(queue, "redis", None)
    if redis is not None:
        kwargs = redis.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        tls = "SSL" in redis.connection_pool.connection_class.__name__
        where = f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
        return f"{'rediss' if tls else 'redis'}://{where}"
    pool = getattr(queue, "pool", None)
    conninfo = getattr(pool, "conninfo", None)
    if isinstance(conninfo, str):
        return redact(conninfo)
    return type(queue).__name__


def error_text(exc: BaseException, queue: Queue) -> str:
    """``exc``'s message on one line, without ``queue``'s passwords."""
    text = str(exc) or type(exc).__name__
    pool = getattr(queue, "pool", None)
    conninfo = getattr(pool, "conninfo", None)
    if isinstance(conninfo, str):
        text = scrub(text, conninfo)
    redis = getattr(queue, "redis", None)
    if redis is not None:
        password = redis.connection_pool.connection_kwargs.get("password")
        if password:
            text = text.replace(str(password), "***")
    return " ".join(text.split())


def _is_auth_error(exc: BaseException) -> bool:
    from redis.exceptions import AuthenticationError, AuthorizationError

    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return True
    return "password authentication failed" in str(exc)


async def _probe(queue: Queue, timeout: float) -> None:
    """One attempt to reach ``queue``'s broker; raises on failure."""
    redis = getattr(queue, "redis", None)
    if redis is not None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        connection = redis.connection_pool.make_connection()
        connection.retry = Retry(NoBackoff(), 0)  # one try: the backoff is ours
        try:
            await asyncio.wait_for(connection.connect(), timeout)
            await connection.send_command("PING")
            await asyncio.wait_for(connection.read_response(), timeout)
        finally:
            await connection.disconnect()
        return
    pool = getattr(queue, "pool", None)
    conninfo = getattr(pool, "conninfo", None)
    if isinstance(conninfo, str):
        import psycopg

        connection = await psycopg.AsyncConnection.connect(
            conninfo, connect_timeout=max(1, int(timeout))
        )
        await connection.close()
        return
    await asyncio.wait_for(queue.connect(), timeout)


async def wait_for_broker(queue: Queue, timeout: float = 30.0) -> None:
    """Return once ``queue``'s broker answers; retry with backoff (a log line per failed
    attempt) and raise ``BrokerUnreachableError`` after ``timeout`` seconds."""
    where = describe(queue)
    deadline = time.monotonic() + timeout
    delay = FIRST_RETRY_DELAY
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            await _probe(queue, max(0.5, min(remaining, MAX_RETRY_DELAY)))
        except Exception as exc:  # every failure to connect is retried
            reason = error_text(exc, queue)
            if _is_auth_error(exc):
                raise BrokerUnreachableError(
                    f"broker {where} refused the credentials ({reason}); fix the user/password "
                    "in the URL (--url / DOMAINJOBS_URL)"
                ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnreachableError(
                    f"broker {where} unreachable for {timeout:g} s ({attempt} attempts, last "
                    f"error: {reason}); start it, or fix the URL (--url / DOMAINJOBS_URL), or "
                    "raise connect_timeout"
                ) from None
            wait = min(delay, remaining)
            logger.warning(
                "broker %s unreachable (attempt %d: %s); retrying in %.1f s, giving up in %.0f s",
                where,
                attempt,
                reason,
                wait,
                remaining,
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            continue
        if attempt > 1:
            logger.info("broker %s reachable after %d attempts", where, attempt)
        return


def resolve_url(url: str | None = None, settings: Settings | None = None) -> str:
    """The broker URL to use: ``url``, else the configured one, else the project's embedded
    broker (started or attached to; a clear ``ConfigError`` when it is not installed)."""
    if url:
        return url
    settings = settings or load_settings()
    if settings.url:
        return settings.url
    return embedded_url(settings)
