"""Turn a broker URL into SAQ queues, and keep passwords out of everything we print."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from saq.queue import Queue

from domainjobs.errors import ConfigError

ACCEPTED_FORMS = (
    "redis://[:password@]host[:port][/db]",
    "rediss://... (TLS)",
    "unix:///path/to/redis.sock[?db=N]",
    "valkey://... and valkeys://... (same as redis)",
    "postgresql://user[:password]@host[:port]/dbname",
)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def bad_url(url: str, why: str) -> ConfigError:
    """A ``ConfigError`` for ``url`` (redacted) listing the accepted forms."""
    return ConfigError(
        f"broker URL {redact(url)!r} {why}; accepted forms: " + ", ".join(ACCEPTED_FORMS)
    )


def queue_from_url(url: str, name: str, **queue_kwargs: Any) -> Queue:
    """A SAQ queue called ``name`` on the broker at ``url``."""
    import redis.asyncio as aioredis

    from domainjobs.sweep import SweepSafeRedisQueue

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad_url(url, f"cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
        if scheme.startswith("valkey"):
            url = "redis" + url[len("valkey") :]
        if scheme != "unix" and not parts.hostname:
            raise bad_url(url, "has no host")
        client = aioredis.from_url(url)
        return SweepSafeRedisQueue(client, name=name, **queue_kwargs)
    if scheme in ("postgres", "postgresql"):
        from domainjobs.sweep import postgres_queue_class

        return postgres_queue_class().from_url(url, name=name, **queue_kwargs)  # type: ignore[no-any-return, attr-defined]
    raise bad_url(url, f"has an unsupported scheme {parts.scheme!r}")
