"""Litestar on the shop domains: enqueue a job from a route, serve its status and result.

    cd examples/shop
    export DOMAINJOBS_URL=redis://localhost:6379
    python -m domainjobs run &
    python -m uvicorn --app-dir .. litestar_app:app

Set SHOP_IN_PROCESS_WORKERS=1 to run the workers inside the web process (development).
(Already on litestar-saq? See domainjobs.contrib.litestar and docs/litestar.md.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from app.domain.billing.jobs.tasks.invoices import create_invoice
from litestar import Litestar, get, post
from litestar.exceptions import NotFoundException

from domainjobs import Jobs
from domainjobs.lifespan import jobs_lifespan

jobs = Jobs()


@dataclass
class Invoice:
    order_id: int
    amount_cents: int


@post("/invoices", status_code=202)
async def new_invoice(data: Invoice) -> dict[str, Any]:
    """Enqueue billing.create_invoice (typed: mypy checks the arguments)."""
    handle = await jobs.enqueue(
        create_invoice, order_id=data.order_id, amount_cents=data.amount_cents
    )
    return handle.to_dict()


@get("/jobs/{key:str}")
async def job_status(key: str) -> dict[str, Any]:
    """The job's status, and its result once complete."""
    handle = await jobs.job(key)
    if handle is None:
        raise NotFoundException(f"no job {key!r}")
    return handle.to_dict()


app = Litestar(
    route_handlers=[new_invoice, job_status],
    lifespan=[jobs_lifespan(jobs, run_workers=os.environ.get("SHOP_IN_PROCESS_WORKERS") == "1")],
)
