"""Faults inside a worker process (docs/reliability.md): a task that calls ``sys.exit``, a
task that blocks the event loop, SIGTERM while plain ``def`` jobs run in threads.

Everything is real: a Redis broker, a separate counter Redis, ``python -m domainjobs run``
worker processes, real signals. Each task counts its runs and completions in the counter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from domainjobs.brokers.sweep import LOST_AFTER, SWEEP_PERIOD
from domainjobs.brokers.urls import queue_from_url
from tests.fault_helpers import (
    Counts,
    enqueue_at,
    fault_app,
    log_of,
    read_statuses,
    start_worker,
    stop_all,
    summary,
    wait_all_done,
)
from tests.servers import wait_for


@pytest.fixture
def app(make_app: Callable[..., Path]) -> tuple[str, str]:
    return fault_app(make_app)


async def _job(url: str, key: str) -> object:
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        return await queue.job(key)
    finally:
        await queue.disconnect()


def test_sys_exit_and_keyboard_interrupt_in_a_task_fail_that_job_only(
    redis_url: str, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    worker = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "2")
    try:
        [exiting] = asyncio.run(enqueue_at(redis_url, "faults.exit_now", 1, retries=2))
        [interrupted] = asyncio.run(enqueue_at(redis_url, "faults.interrupt", 1))
        others = asyncio.run(enqueue_at(redis_url, "faults.touch", 20, work_ms=20))

        def terminal(key: str) -> bool:
            job = asyncio.run(_job(redis_url, key))
            return job is not None and job.status in ("failed", "complete")  # type: ignore[attr-defined]

        wait_for(lambda: terminal(exiting) and terminal(interrupted), timeout=60, what="failures")
        wait_all_done(read_statuses(redis_url, others), len(others), timeout=60)
        job = asyncio.run(_job(redis_url, exiting))
        assert job.status == "failed" and job.attempts == 2, job  # type: ignore[attr-defined]
        assert "SystemExit(3)" in job.error  # type: ignore[attr-defined]
        assert counts.runs([exiting]) == [2]  # retried by SAQ's rules, then failed
        job = asyncio.run(_job(redis_url, interrupted))
        assert job.status == "failed" and "KeyboardInterrupt" in job.error  # type: ignore[attr-defined]
        assert worker.poll() is None, log_of(worker)  # the worker is still running
        assert counts.runs(others) == [1] * len(others)
    finally:
        codes = stop_all([worker])
        counts.close()
    assert codes == [0], log_of(worker)


@pytest.mark.timeout(300)  # real processes and faults on a loaded box
def test_a_blocked_event_loop_duplicates_no_job_and_is_reported(
    redis_url: str, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    """An ``async def`` task calls ``time.sleep(15)``: the process's lease is renewed from a
    thread, so no other process takes its jobs; the watchdog names the blocking job."""
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    workers = [
        start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
        for _ in range(2)
    ]
    try:
        [blocker] = asyncio.run(enqueue_at(redis_url, "faults.block", 1, seconds=15, timeout=120))
        wait_for(lambda: counts.runs([blocker]) == [1], timeout=60, what="the blocker to start")
        keys = asyncio.run(enqueue_at(redis_url, "faults.touch", 300, work_ms=50))
        statuses = wait_all_done(read_statuses(redis_url, keys), len(keys), timeout=120)
        wait_for(lambda: counts.done([blocker]) == [1], timeout=60, what="the blocker to end")
        wait_all_done(read_statuses(redis_url, [blocker]), 1, timeout=30)
        # a sweep of the other process has run several times meanwhile
        time.sleep(LOST_AFTER + 2 * SWEEP_PERIOD)
        runs, done = counts.runs(keys), counts.done(keys)
        figures = summary(statuses, runs, done)
        print("blocked loop:", figures)
        assert figures["ran_twice"] == 0 and figures["lost"] == 0, figures
        assert counts.runs([blocker]) == [1]
        logs = [log_of(w) for w in workers]
        reports = [line for log in logs for line in log.splitlines() if "was blocked for" in line]
        named = [line for line in reports if blocker in line and "faults.block" in line]
        assert len(named) == 1, reports  # once, naming the job (a loaded box may add others)
    finally:
        codes = stop_all(workers)
        counts.close()
    assert codes == [0, 0], [log_of(w)[-2000:] for w in workers]


@pytest.mark.timeout(300)  # real processes and faults on a loaded box
def test_sigterm_with_thread_jobs_honours_the_grace_and_requeues_none_while_they_run(
    redis_url: str, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    """``--grace 5`` with six 12 s ``def`` jobs: the process exits within grace + 2 s; the
    jobs are not put back while their threads still run (they die with the process), then
    run again elsewhere once its lease lapses, and each completes exactly once."""
    roots, app_dir = app
    grace = 5.0
    counts = Counts(fresh_redis_url)
    first = start_worker(
        redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "6", "--grace", str(grace)
    )
    second = None
    try:
        keys = asyncio.run(enqueue_at(redis_url, "faults.slow", 6, seconds=12, timeout=120))
        wait_for(lambda: counts.runs(keys) == [1] * 6, timeout=60, what="six threads running")
        # an idle worker is ready to take any job the first one would put back
        second = start_worker(redis_url, roots, app_dir, fresh_redis_url, "--concurrency", "6")
        wait_for(lambda: "serving queue" in log_of(second), timeout=60, what="second worker")
        signalled = time.monotonic()
        first.terminate()
        code = first.wait(60)
        took = time.monotonic() - signalled
        exited_at = time.time()
        print(f"SIGTERM with thread jobs: exit {code} after {took:.1f}s (grace {grace:g}s)")
        assert code == 0, log_of(first)
        assert took <= grace + 2 + 3, f"exited {took:.1f}s after SIGTERM"  # + slack for CI
        statuses = wait_all_done(read_statuses(redis_url, keys), len(keys), timeout=120)
        runs, done = counts.runs(keys), counts.done(keys)
        print("SIGTERM with thread jobs:", summary(statuses, runs, done))
        assert done == [1] * 6, summary(statuses, runs, done)  # each body completed once
        for key in keys:
            starts = counts.starts(key)
            assert len(starts) == 2, starts  # killed with the process, then run again
            assert starts[1] >= exited_at - 0.5, "re-run while its first thread still ran"
        assert "still running in its thread" in log_of(first)
    finally:
        codes = stop_all([p for p in (first, second) if p is not None])
        counts.close()
    assert all(c == 0 for c in codes), codes
