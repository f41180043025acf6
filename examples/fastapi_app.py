"""FastAPI on the shop domains: enqueue a job from a route, serve its status and result.

    cd examples/shop
    export DOMAINJOBS_URL=redis://localhost:6379
    python -m domainjobs run &                              # the workers
    python -m uvicorn --app-dir .. fastapi_app:app          # the web app

    curl -X POST localhost:8000/invoices -H 'content-type: application/json' \\
         -d '{"order_id": 7, "amount_cents": 1250}'         # -> {"key": "...", ...}
    curl localhost:8000/jobs/<key>                          # -> status and result

Set SHOP_IN_PROCESS_WORKERS=1 to run the workers inside the web process (development).
"""

from __future__ import annotations

import os
from typing import Any

from app.domain.billing.jobs.tasks.invoices import charge_card, create_invoice
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from domainjobs import DomainJobsError, Jobs, UnknownTaskError
from domainjobs.lifespan import jobs_lifespan

jobs = Jobs()  # the configured roots ([tool.domainjobs]) and broker (DOMAINJOBS_URL)
app = FastAPI(
    lifespan=jobs_lifespan(jobs, run_workers=os.environ.get("SHOP_IN_PROCESS_WORKERS") == "1")
)


class Invoice(BaseModel):
    order_id: int
    amount_cents: int


@app.post("/invoices", status_code=202)
async def new_invoice(invoice: Invoice) -> dict[str, Any]:
    """Enqueue billing.create_invoice; mypy checks these arguments against the task."""
    handle = await jobs.enqueue(
        create_invoice, order_id=invoice.order_id, amount_cents=invoice.amount_cents
    )
    return handle.to_dict()


@app.post("/invoices/{invoice_id}/charge")
async def charge(invoice_id: int, timeout: int = 5) -> dict[str, Any]:
    """Run billing.charge and wait for its result (its `timeout` parameter is the task's own)."""
    text = await jobs.with_options(wait_timeout=10).apply(
        charge_card, invoice_id=invoice_id, timeout=timeout
    )
    return {"result": text}


@app.post("/tasks/{name}", status_code=202)
async def enqueue_by_name(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Enqueue any task by public name; bad names or arguments are a 422 with one sentence."""
    try:
        handle = await jobs.enqueue(name, **kwargs)
    except (UnknownTaskError, TypeError, DomainJobsError) as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return handle.to_dict()


@app.get("/jobs/{key}")
async def job_status(key: str) -> dict[str, Any]:
    """The job's status, and its result once complete."""
    handle = await jobs.job(key)
    if handle is None:
        raise HTTPException(status_code=404, detail=f"no job {key!r}")
    return handle.to_dict()
