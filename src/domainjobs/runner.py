"""Run several ``saq.Worker``s in one process until a signal (or, in burst mode, until
their queues are drained), with one set of signal handlers for all of them.

SAQ's ``Worker.start`` installs its own SIGINT/SIGTERM handler, which is fine for one
worker; with several on one loop each handler replaces the previous one, so only the last
worker would stop. ``run_workers`` takes signals over for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any

from saq import Worker

from domainjobs.hooks import HookRunner

logger = logging.getLogger("domainjobs")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def run_workers(
    workers: Sequence[Worker[Any]], *, handle_signals: bool = True, connect_timeout: float = 30.0
) -> int:
    """Connect the workers' queues, run every worker, and return an exit status.

    Returns 0 when every worker stopped cleanly, 1 when a worker failed (a startup hook
    raised, the broker was unreachable, ...) or a shutdown hook raised.
    """
    queues = list({id(w.queue): w.queue for w in workers}.values())
    from domainjobs.brokers import wait_for_broker  # retries an unreachable broker (issue 5)

    for queue in queues:
        await wait_for_broker(queue, connect_timeout)
        await queue.connect()
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    installed = []
    if handle_signals:
        for worker in workers:
            worker.SIGNALS = []
        for signum in STOP_SIGNALS:
            try:
                loop.add_signal_handler(signum, stop_requested.set)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
    tasks = [asyncio.create_task(w.start(), name=f"worker:{w.queue.name}") for w in workers]
    waiter = asyncio.create_task(stop_requested.wait())
    status = 0
    try:
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending and not stop_requested.is_set():
            done, pending_now = await asyncio.wait(
                {*pending, waiter}, return_when=asyncio.FIRST_COMPLETED
            )
            pending = {t for t in pending_now if t is not waiter}
            for task in done:
                if task is not waiter and task.exception() is not None:
                    logger.error("worker %s failed: %s", task.get_name(), task.exception())
                    status = 1
                    stop_requested.set()
        if stop_requested.is_set():
            logger.info("stopping %d worker(s)", len(workers))
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            status = 1
    finally:
        waiter.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)
        for queue in queues:
            try:
                await queue.disconnect()
            except Exception:  # noqa: BLE001 - a broken connection must not hide the status
                logger.debug("disconnecting %s failed", queue, exc_info=True)
    hooks = {id(h): h for w in workers if isinstance(h := getattr(w, "domainjobs_hooks", None), HookRunner)}
    if any(h.failed_shutdown_hooks for h in hooks.values()):
        status = 1
    return status
