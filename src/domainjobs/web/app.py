"""``create_app``: the dashboard, SAQ's own UI under ``/saq``, and SAQ's JSON API, as one
Starlette app with optional basic auth."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from saq.queue import Queue

from domainjobs.config import cron_timezone, load_settings
from domainjobs.discovery.builder import resolve_registry
from domainjobs.errors import ConfigError
from domainjobs.observability.endpoint import metrics_endpoint
from domainjobs.registry import RegistryOrRoots
from domainjobs.web.actions import SameOriginPosts
from domainjobs.web.auth import DEFAULT_USER, BasicAuth, credentials_from_env
from domainjobs.web.queues import QueueSet, make_queues

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    registry_or_roots: RegistryOrRoots = None,
    url: str | None = None,
    *,
    queues: Sequence[Queue] | None = None,
    username: str | None = None,
    password: str | None = None,
    cron_tz: str | None = None,
) -> Any:
    """The dashboard for every queue of the registry, as a Starlette (ASGI) app.

    Pages: overview (``/``), trends (``/trends``), schedules (``/schedules``), jobs
    (``/jobs``); SAQ's own UI at ``/saq/`` and its JSON API at ``/api/queues``. ``queues``
    replaces the registry's (pass your own ``saq.Queue`` objects). Basic auth is on when a
    password is given, or else when ``DOMAINJOBS_WEB_PASSWORD`` is set (user ``username``,
    ``DOMAINJOBS_WEB_USER`` or ``admin``). ``cron_tz`` (default: the configured one) is the
    zone of the schedules page.
    """
    try:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        # the 'web' extra: these import starlette and jinja2
        from domainjobs.web.pages import dashboard_routes
        from domainjobs.web.saqui import api_routes, saq_ui
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigError(
            f"the web UI needs the 'web' extra ({exc.name} is missing): "
            "pip install 'domainjobs[web]'"
        ) from None

    registry = resolve_registry(registry_or_roots)
    queue_set = QueueSet(list(queues) if queues is not None else make_queues(registry, url))
    tz = cron_timezone(cron_tz if cron_tz is not None else load_settings().cron_tz)
    if password is None:
        found = credentials_from_env()
        if found is not None:
            username, password = username or found[0], found[1]

    async def health(request: Any) -> Response:
        await queue_set.connect()
        for queue in queue_set.queues.values():
            await queue.info()
        return Response("OK", media_type="text/plain")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await queue_set.disconnect()

    pages, error_page = dashboard_routes(registry, queue_set, tz, auth=bool(password))
    app = Starlette(
        routes=[
            *pages,
            *api_routes(queue_set),
            saq_ui(queue_set),
            Mount("/assets", StaticFiles(directory=STATIC), name="assets"),
            Route("/health", health),
            Route("/metrics", metrics_endpoint(queue_set)),  # Prometheus (extra 'metrics')
        ],
        lifespan=lifespan,
        exception_handlers={Exception: error_page},
    )
    app.state.domainjobs_queues = queue_set
    app.add_middleware(SameOriginPosts)
    if password:
        app.add_middleware(BasicAuth, username=username or DEFAULT_USER, password=password)
    return app
