"""The queues a dashboard shows, connected on first use (mounted apps get no lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from saq.queue import Queue

from domainjobs.brokers.urls import queue_from_url, resolve_url
from domainjobs.discovery.builder import resolve_registry
from domainjobs.registry import DEFAULT_QUEUE, RegistryOrRoots
from domainjobs.runtime.trendstore import TrendStore, store_for


class QueueSet:
    """The queues the UI shows (by name) and their trend stores, connected on first use."""

    def __init__(self, queues: Sequence[Queue]) -> None:
        self.queues = {queue.name: queue for queue in queues}
        self.stores: dict[str, TrendStore | None] = {
            queue.name: store_for(queue) for queue in queues
        }
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
