"""Starlette on the shop domains: enqueue a job from a route, serve its status and result.

    cd examples/shop
    export DOMAINJOBS_URL=redis://localhost:6379
    python -m domainjobs run &
    python -m uvicorn --app-dir .. starlette_app:app

Set SHOP_IN_PROCESS_WORKERS=1 to run the workers inside the web process (development).
The facade is reachable as the module-level ``jobs``, as ``request.app.state.jobs`` and
(lifespan state) as ``request.state.jobs``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domainjobs import DomainJobsError, Jobs
from domainjobs.lifespan import jobs_lifespan


async def new_invoice(request: Request) -> JSONResponse:
    """Enqueue billing.create_invoice by public name with the JSON body as arguments."""
    jobs: Jobs = request.state.jobs
    try:
        handle = await jobs.enqueue("billing.create_invoice", **await request.json())
    except (DomainJobsError, TypeError) as exc:  # unknown task, bad arguments, bad values
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return JSONResponse(handle.to_dict(), status_code=202)


async def job_status(request: Request) -> JSONResponse:
    """The job's status, and its result once complete."""
    handle = await request.state.jobs.job(request.path_params["key"])
    if handle is None:
        return JSONResponse({"detail": "no such job"}, status_code=404)
    return JSONResponse(handle.to_dict())


app = Starlette(
    routes=[
        Route("/invoices", new_invoice, methods=["POST"]),
        Route("/jobs/{key}", job_status),
    ],
    lifespan=jobs_lifespan(run_workers=os.environ.get("SHOP_IN_PROCESS_WORKERS") == "1"),
)
