"""The dashboard: domains, trends, schedules and jobs of every queue, as an ASGI app
(extra ``web``).

:func:`create_app` gives a Starlette app: the dashboard's pages, SAQ's own UI under
``/saq/`` and SAQ's JSON API under ``/api/queues``, for all the registry's queues at once,
with optional HTTP basic auth. Mount it inside your own web app::

    from starlette.routing import Mount
    from domainjobs.web import create_app

    routes = [Mount("/jobs", app=create_app("app.domain", "redis://localhost:6379"))]

It keeps no module-level state (two apps can live in one process) and takes its mount path
from the request, so no ``root_path`` argument is needed. ``domainjobs run --web`` serves
it with uvicorn (:func:`serve`). See docs/dashboard.md.
"""

from __future__ import annotations

from domainjobs.web.app import create_app
from domainjobs.web.auth import (
    DEFAULT_USER,
    PASSWORD_ENV,
    REALM,
    USER_ENV,
    BasicAuth,
    credentials_from_env,
)
from domainjobs.web.queues import QueueSet, make_queues
from domainjobs.web.serving import bind, check_exposure, is_loopback, serve

__all__ = [
    "DEFAULT_USER",
    "PASSWORD_ENV",
    "REALM",
    "USER_ENV",
    "BasicAuth",
    "QueueSet",
    "bind",
    "check_exposure",
    "create_app",
    "credentials_from_env",
    "is_loopback",
    "make_queues",
    "serve",
]
