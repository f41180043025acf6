"""``/metrics`` for the web app of ``domainjobs.web.create_app`` (a Starlette endpoint).

prometheus-client is imported on the first scrape: without the ``metrics`` extra the page
answers 501 with the one line saying how to install it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from saq.queue import Queue


class ConnectedQueues(Protocol):
    """The web app's queues (``domainjobs.web.QueueSet``)."""

    @property
    def queues(self) -> Mapping[str, Queue]: ...

    async def connect(self) -> None: ...


def metrics_endpoint(queue_set: ConnectedQueues) -> Callable[[Any], Awaitable[Any]]:
    """A Starlette endpoint serving the job metrics and ``queue_set``'s queue gauges."""
    gauges: Any = None

    async def metrics(request: Any) -> Any:
        nonlocal gauges
        from starlette.responses import PlainTextResponse, Response  # the 'web' extra

        try:
            # the 'metrics' extra: prometheus-client, imported on the first scrape
            from domainjobs.observability.exposition import QueueGauges, render
        except ImportError as exc:
            return PlainTextResponse(
                f"metrics need the 'metrics' extra ({exc.name} is missing): "
                "pip install 'domainjobs[metrics]'\n",
                status_code=501,
            )
        await queue_set.connect()
        if gauges is None:
            gauges = QueueGauges(queue_set.queues.values())
        body, content_type = await render(gauges)
        return Response(body, headers={"content-type": content_type})

    return metrics
