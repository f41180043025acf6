"""SAQ's own single-page UI and JSON API (the routes of ``saq.web.starlette``) for every
queue of a :class:`~domainjobs.web.queues.QueueSet`, without SAQ's module-level state.

The dashboard mounts these routes at ``/saq`` (SAQ's page, API and static files); the JSON
API stays at ``/api/queues...`` of the dashboard too, for scripts written against it.
"""

from __future__ import annotations

from typing import Any

from saq.web.common import STATIC_PATH, job_dict, render
from saq.web.starlette import GZStaticFiles
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from domainjobs.web.queues import QueueSet


def api_routes(queue_set: QueueSet) -> list[BaseRoute]:
    """SAQ's JSON API: queues, a job, retry and abort."""

    def not_found(what: str) -> JSONResponse:
        return JSONResponse({"error": f"{what} not found"}, status_code=404)

    async def all_info() -> list[Any]:
        await queue_set.connect()
        return [await queue.info() for queue in queue_set.queues.values()]

    async def queues_(request: Request) -> JSONResponse:
        name = request.path_params.get("queue")
        if name is None:
            return JSONResponse({"queues": await all_info()})
        queue = queue_set.queues.get(name)
        if queue is None:
            return not_found(f"queue {name!r}")
        await queue_set.connect()
        return JSONResponse({"queue": await queue.info(jobs=True)})

    async def find_job(request: Request) -> Any:
        queue = queue_set.queues.get(request.path_params["queue"])
        if queue is None:
            return None
        await queue_set.connect()
        return await queue.job(request.path_params["job"])

    async def jobs(request: Request) -> JSONResponse:
        job = await find_job(request)
        if job is None:
            return not_found(f"job {request.path_params['job']!r}")
        return JSONResponse({"job": job_dict(job)})

    async def retry(request: Request) -> JSONResponse:
        job = await find_job(request)
        if job is None:
            return not_found(f"job {request.path_params['job']!r}")
        await job.retry("retried from ui")
        return JSONResponse({})

    async def abort(request: Request) -> JSONResponse:
        job = await find_job(request)
        if job is None:
            return not_found(f"job {request.path_params['job']!r}")
        await job.abort("aborted from ui")
        return JSONResponse({})

    return [
        Route("/api/queues", queues_),
        Route("/api/queues/{queue}", queues_),
        Route("/api/queues/{queue}/jobs/{job}", jobs),
        Route("/api/queues/{queue}/jobs/{job}/retry", retry, methods=["POST"]),
        Route("/api/queues/{queue}/jobs/{job}/abort", abort, methods=["POST"]),
    ]


def saq_ui(queue_set: QueueSet) -> Mount:
    """SAQ's page, API and static files, to mount at ``/saq``."""

    async def views(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return Response(content=render(root_path=root), media_type="text/html")

    return Mount(
        "/saq",
        routes=[
            Route("/", views),
            Route("/queues/{queue}", views),
            Route("/queues/{queue}/jobs/{job}", views),
            *api_routes(queue_set),
            Mount("/static", GZStaticFiles(directory=STATIC_PATH)),
        ],
    )
