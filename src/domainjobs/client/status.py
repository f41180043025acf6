"""What ``status`` reports per queue: queued/active/scheduled/failed counts and live workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from saq.job import Status
from saq.queue import Queue


@dataclass(frozen=True)
class WorkerStatus:
    """A live worker of a queue, as it last reported itself (every ``worker_info`` timer)."""

    id: str
    stats: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueueStatus:
    """Counts of one queue. ``failed`` counts failed jobs still stored (within their ttl)."""

    name: str
    queued: int
    active: int
    scheduled: int
    failed: int
    workers: tuple[WorkerStatus, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "name": self.name,
            "queued": self.queued,
            "active": self.active,
            "scheduled": self.scheduled,
            "failed": self.failed,
            "workers": [
                {"id": w.id, "stats": w.stats, "metadata": w.metadata} for w in self.workers
            ],
        }


async def count_failed(queue: Queue) -> int:
    """Failed jobs still stored on ``queue`` (a scan of the queue's job keys)."""
    count = 0
    async for _job in queue.iter_jobs([Status.FAILED]):
        count += 1
    return count


async def queue_status(queue: Queue) -> QueueStatus:
    """Read the counts and live workers of one connected queue."""
    info = await queue.info()
    workers = tuple(
        WorkerStatus(
            id=worker_id,
            stats=dict(data.get("stats") or {}),
            metadata=data.get("metadata"),
        )
        for worker_id, data in sorted(info.get("workers", {}).items())
    )
    return QueueStatus(
        name=queue.name,
        queued=int(info.get("queued", 0)),
        active=int(info.get("active", 0)),
        scheduled=max(int(info.get("scheduled", 0)), 0),
        failed=await count_failed(queue),
        workers=workers,
    )
