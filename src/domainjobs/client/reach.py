"""A broker out of reach, as a client call reports it: ``BrokerUnreachableError``.

Workers and the CLI already report a broker that does not answer as
``BrokerUnreachableError``; ``Jobs`` and ``JobHandle`` methods do the same (instead of
redis-py's or psycopg's own connection errors), naming the broker without its password,
with the driver's error chained as ``__cause__``. Nothing is retried here: a web request
that enqueues should fail fast and say why.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from redis import exceptions as redis_errors
from saq.queue import Queue

from domainjobs.brokers.urls import describe, error_text, redact, scrub
from domainjobs.errors import BrokerUnreachableError, DomainJobsError

P = ParamSpec("P")
R = TypeVar("R")


class Reaches(Protocol):
    """Something whose calls reach a broker: it turns a failure into the error to raise."""

    def _unreachable(self, exc: BaseException) -> BrokerUnreachableError: ...


S = TypeVar("S", bound=Reaches)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the broker did not answer (connection refused, reset, timed
    out, a server restarting), as opposed to an error of the call itself (ours, or an
    asyncio timeout such as ``JobTimeoutError``: ``TimeoutError`` is an ``OSError``)."""
    if isinstance(exc, (DomainJobsError, TimeoutError)):
        return False
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        return True
    psycopg = sys.modules.get("psycopg")  # only when the postgres extra is in use
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)


def _error(where: str, exc: BaseException, reason: str) -> BrokerUnreachableError:
    return BrokerUnreachableError(
        f"broker {where} is unreachable ({type(exc).__name__}: {reason}); start it, or fix "
        "the URL (--url / DOMAINJOBS_URL)"
    )


def unreachable_at_url(url: str, exc: BaseException) -> BrokerUnreachableError:
    """The error for a call to the broker at ``url`` that failed with ``exc``."""
    reason = " ".join(scrub(str(exc) or type(exc).__name__, url).split())
    return _error(redact(url), exc, reason)


def unreachable_queue(queue: Queue, exc: BaseException) -> BrokerUnreachableError:
    """The error for a call to ``queue``'s broker that failed with ``exc``."""
    return _error(describe(queue), exc, error_text(exc, queue))


def reports_unreachable(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """Decorate an async method so a broker out of reach raises ``BrokerUnreachableError``."""

    @functools.wraps(method)
    async def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            raise self._unreachable(exc) from exc

    return call
