"""One ASGI lifespan helper for Starlette, FastAPI, Litestar (and any framework that takes an
async-context-manager lifespan): open the ``Jobs`` facade on startup, close it on shutdown,
and optionally run the workers inside the web process (for development).

```python
jobs = Jobs()                                   # configured roots and broker
app = FastAPI(lifespan=jobs_lifespan(jobs))     # Starlette(lifespan=...) is the same
app = Litestar(route_handlers=[...], lifespan=[jobs_lifespan(jobs)])
```

The app reaches the facade three ways: the module-level ``jobs`` object itself,
``app.state.jobs``, and (Starlette/FastAPI lifespan state) ``request.state.jobs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from domainjobs.client.jobs import Jobs
from domainjobs.config import cron_timezone, load_settings
from domainjobs.registry import Registry
from domainjobs.runtime.runner import run_workers
from domainjobs.runtime.worker import DomainWorker, build_workers

logger = logging.getLogger("domainjobs")

Lifespan = Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]


@asynccontextmanager
async def in_process_workers(
    registry: Registry,
    *,
    url: str | None = None,
    queues: Sequence[str] | None = None,
    grace: float = 10.0,
    **worker_kwargs: Any,
) -> AsyncIterator[list[DomainWorker]]:
    """Run one worker per queue as tasks of the current event loop while the block runs;
    on exit they stop taking jobs, running jobs get ``grace`` seconds, the shutdown hooks
    run. Signals are left to the server (uvicorn, hypercorn, ...)."""

    worker_kwargs.setdefault("cron_tz", cron_timezone(load_settings().cron_tz))
    workers = build_workers(registry, queues=queues, url=url, **worker_kwargs)
    runner = asyncio.create_task(
        run_workers(workers, handle_signals=False, grace=grace), name="domainjobs:workers"
    )
    stopping = False

    def ended(task: asyncio.Task[int]) -> None:
        if not stopping and not task.cancelled():
            logger.error(
                "the in-process workers stopped on their own (status %s): no jobs run in this "
                "process until it restarts; see the log above",
                task.exception() or task.result(),
            )

    runner.add_done_callback(ended)
    try:
        yield workers
    finally:
        stopping = True
        while not runner.done():  # repeated: a worker that was still starting sees it too
            for worker in workers:
                worker.stop_taking_jobs()
            await asyncio.wait({runner}, timeout=0.1)
        status = runner.result()
        if status:
            logger.error("in-process workers stopped with status %d", status)


def jobs_lifespan(
    jobs: Jobs | None = None,
    *,
    roots: str | Sequence[str] | None = None,
    url: str | None = None,
    run_workers: bool = False,
    worker_options: Mapping[str, Any] | None = None,
    state_key: str = "jobs",
) -> Lifespan:
    """An ASGI lifespan (``app -> async context manager``) that opens ``jobs`` (or a
    ``Jobs(roots, url=url)``) for the life of the app.

    ``run_workers=True`` also runs the workers in the web process (development only: in
    production run ``python -m domainjobs run``); ``worker_options`` go to
    ``build_workers`` (``concurrency``, ``queues``, ``grace``, ...). The facade is set as
    ``app.state.<state_key>`` and yielded as lifespan state ``{state_key: jobs}``.
    """
    facade = jobs if jobs is not None else Jobs(roots, url=url)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(facade)
            if run_workers:
                await stack.enter_async_context(
                    in_process_workers(
                        facade.registry, url=facade.url, **dict(worker_options or {})
                    )
                )
            state = getattr(app, "state", None)
            if state is not None:
                setattr(state, state_key, facade)
            yield {state_key: facade}

    lifespan.jobs = facade  # type: ignore[attr-defined]
    return lifespan


def jobs_from(holder: Any, state_key: str = "jobs") -> Jobs:
    """The facade a ``jobs_lifespan`` stored, from a request, an app or their ``state``."""
    for candidate in (holder, getattr(holder, "app", None)):
        state = getattr(candidate, "state", None)
        found = getattr(state, state_key, None)
        if isinstance(found, Jobs):
            return found
    raise LookupError(
        f"no Jobs found as state.{state_key}: pass lifespan=jobs_lifespan(...) to the app"
    )
