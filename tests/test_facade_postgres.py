"""The Jobs facade on SAQ's PostgreSQL queue (no per-job notifications: it polls with a
short back-off), against a real throwaway PostgreSQL cluster."""

from __future__ import annotations

import importlib
import time
import uuid

import pytest

pytest.importorskip("psycopg")

from domainjobs import JobFailedError, Jobs, TaskArgumentsError, discover
from domainjobs.lifespan import in_process_workers

TASKS = """
from domainjobs import task

@task(queue="QUEUE", retries=1)
async def double(ctx, n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    return 2 * n
"""


@pytest.fixture
def pg_app(make_app):
    queue = f"pg_{uuid.uuid4().hex[:8]}"  # the cluster is shared by the session
    base = make_app({"app/domain/math/jobs/tasks.py": TASKS.replace("QUEUE", queue)})
    registry = discover(f"{base.name}.domain")
    return registry, importlib.import_module(f"{base.name}.domain.math.jobs.tasks"), queue


async def test_enqueue_apply_map_and_keys_on_postgres(pg_app, postgres_url):
    registry, tasks, queue = pg_app
    async with (
        Jobs(registry, url=postgres_url) as jobs,
        in_process_workers(registry, url=postgres_url),
    ):
        started = time.monotonic()
        assert await jobs.with_options(wait_timeout=30).apply(tasks.double, n=21) == 42
        assert time.monotonic() - started < 10
        assert await jobs.map(tasks.double, [{"n": i} for i in range(5)]) == [0, 2, 4, 6, 8]
        with pytest.raises(JobFailedError, match="negative"):
            await jobs.apply(tasks.double, n=-1)
        with pytest.raises(TaskArgumentsError):
            await jobs.enqueue(tasks.double, m=1)
        view = jobs.with_options(key="same", delay=3600)
        first = await view.enqueue(tasks.double, n=1)
        second = await view.enqueue(tasks.double, n=2)
        assert first.created and not second.created and second.job.kwargs == {"n": 1}
        (status,) = await jobs.status([queue])
        assert status.scheduled == 1 and status.failed == 1
