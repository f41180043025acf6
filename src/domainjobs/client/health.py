"""Liveness for orchestrators: is a live worker (fresh heartbeat) serving every queue?

A SAQ worker writes its info (``saq:<queue>:worker_info:<id>``, with a TTL of
``timers["worker_info"] + 1`` = 11 s by default) every 10 s; a queue is served while at
least one such record is fresh. ``domainjobs status --check`` exits 0 only when every
selected queue is served, so it fits a Kubernetes liveness/readiness probe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from saq.queue import Queue

from domainjobs.brokers.urls import queue_from_url, redact


@dataclasses.dataclass(frozen=True)
class QueueHealth:
    """Live workers of one queue."""

    queue: str
    workers: int

    @property
    def ok(self) -> bool:
        """Whether at least one live worker serves the queue."""
        return self.workers > 0


async def queue_health(queues: Sequence[Queue]) -> list[QueueHealth]:
    """Live worker counts of ``queues`` (already connected)."""
    result = []
    for queue in queues:
        info = await queue.info()
        result.append(QueueHealth(queue.name, len(info.get("workers") or {})))
    return result


async def check(url: str, names: Sequence[str]) -> list[QueueHealth]:
    """Connect to the broker at ``url`` and report every queue in ``names``."""

    queues = [queue_from_url(url, name) for name in names]
    try:
        for queue in queues:
            await queue.connect()
        return await queue_health(queues)
    finally:
        for queue in queues:
            await queue.disconnect()


def run_check(url: str, names: Sequence[str]) -> int:
    """``status --check``: print one line and return the exit status (0 healthy, 1 not)."""
    import asyncio
    import sys

    try:
        report = asyncio.run(check(url, names))
    except (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError) as exc:
        print(f"unhealthy: broker {redact(url)} is unreachable ({exc})", file=sys.stderr)
        return 1
    except Exception as exc:  # a broker client's own error types (redis, psycopg)
        print(
            f"unhealthy: broker {redact(url)} failed ({type(exc).__name__}: {exc})", file=sys.stderr
        )
        return 1
    line = summary(report)
    healthy = all(h.ok for h in report)
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def summary(report: Sequence[QueueHealth]) -> str:
    """One line: ``ok: default (2 workers), billing (1 worker)`` or what is missing."""
    dead = [h.queue for h in report if not h.ok]
    listed = ", ".join(
        f"{h.queue} ({h.workers} worker{'s' if h.workers != 1 else ''})" for h in report
    )
    if dead:
        return f"unhealthy: no live worker serves {', '.join(dead)}; {listed}"
    return f"ok: {listed}"
