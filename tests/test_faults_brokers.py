"""The broker dies under load (docs/reliability.md): Redis ``kill -9`` and a restart on the
same port, PostgreSQL ``pg_ctl stop -m immediate`` and a start, the embedded Valkey killed.

Real servers, ``python -m domainjobs run`` worker processes, a separate counter Redis. No job
may be lost, none may stay ``active``, and the workers wait quietly for the broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from domainjobs.brokers.embedded import BrokerPaths, ping, read_pid, stop_broker
from domainjobs.brokers.urls import queue_from_url
from domainjobs.config import load_settings
from tests.fault_helpers import (
    Counts,
    RestartablePostgres,
    enqueue_at,
    fault_app,
    log_of,
    read_statuses,
    restartable_redis,
    start_worker,
    stop_all,
    summary,
    wait_all_done,
)
from tests.servers import wait_for

#: How long each broker stays down (seconds): the fault itself, not a synchronisation.
OUTAGE = 3.0


@pytest.fixture
def app(make_app: Callable[..., Path]) -> tuple[str, str]:
    return fault_app(make_app)


def _quiet(log: str, concurrency: int = 10) -> None:
    """A worker waiting for its broker logs no traceback: one line per write it retries
    (at most one per slot and lease), one per back-off step, one for its lease."""
    assert "Traceback" not in log, log[-3000:]
    waiting = [line for line in log.splitlines() if "could not" in line or "out of reach" in line]
    assert len(waiting) <= 2 * concurrency + 12, waiting


@pytest.mark.timeout(300)  # real processes and faults on a loaded box
def test_redis_killed_and_restarted_on_the_same_port_under_load(
    fresh_redis_url: str, app: tuple[str, str]
) -> None:
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    with restartable_redis(fsync="always") as server:
        keys = asyncio.run(enqueue_at(server.url, "faults.touch", 2000, work_ms=30))
        workers = [
            start_worker(server.url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
            for _ in range(2)
        ]
        try:
            wait_for(lambda: sum(counts.done(keys)) >= 400, timeout=120, what="load")
            server.kill()
            time.sleep(OUTAGE)
            server.start()
            restarted = time.monotonic()
            statuses = wait_all_done(read_statuses(server.url, keys), len(keys), timeout=120)
            took = time.monotonic() - restarted
            client = redis.Redis.from_url(server.url)
            active = client.llen("saq:default:active")
            client.close()
            figures = summary(statuses, counts.runs(keys), counts.done(keys))
            print(f"Redis kill -9 + restart: {figures}, all complete {took:.1f}s after restart")
            assert figures["lost"] == 0 and active == 0, figures
            assert figures["ran_twice"] == 0, figures
            for worker in workers:
                assert worker.poll() is None, log_of(worker)
                _quiet(log_of(worker))
        finally:
            codes = stop_all(workers)
            counts.close()
    assert codes == [0, 0], [log_of(w)[-2000:] for w in workers]


@pytest.mark.timeout(300)  # real processes and faults on a loaded box
def test_postgres_crash_and_restart_under_load(fresh_redis_url: str, app: tuple[str, str]) -> None:
    """``pg_ctl stop -m immediate`` for a few seconds while 100 jobs/s arrive: a broken
    connection while a job is marked active is never counted as the job's failure."""
    roots, app_dir = app
    counts = Counts(fresh_redis_url)
    pg = RestartablePostgres()
    pg.start()
    keys: list[str] = []
    producing = threading.Event()
    producing.set()

    async def produce() -> None:
        queue = queue_from_url(pg.url, "default")
        await queue.connect()
        try:
            while producing.is_set():
                tick = time.monotonic()
                for _ in range(10):
                    while True:  # the producer retries through the outage
                        try:
                            job = await queue.enqueue("faults.touch", work_ms=10, retries=1)
                        except Exception:
                            await asyncio.sleep(0.2)
                            continue
                        assert job is not None
                        keys.append(job.key)
                        break
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        finally:
            await queue.disconnect()

    producer = threading.Thread(target=asyncio.run, args=(produce(),))
    workers = []
    try:
        asyncio.run(enqueue_at(pg.url, "faults.touch", 1))  # creates the tables
        workers = [
            start_worker(pg.url, roots, app_dir, fresh_redis_url, "--concurrency", "10")
            for _ in range(2)
        ]
        producer.start()
        wait_for(lambda: len(keys) >= 400, timeout=60, what="load")
        pg.crash()
        time.sleep(OUTAGE + 1)
        pg.start()
        restarted = time.monotonic()
        wait_for(lambda: time.monotonic() - restarted > 5, timeout=10, what="load after")
        producing.clear()
        producer.join(60)
        statuses = wait_all_done(read_statuses(pg.url, keys), len(keys), timeout=120)
        figures = summary(statuses, counts.runs(keys), counts.done(keys))
        print(f"PostgreSQL stop -m immediate + start: {figures}")
        assert figures["lost"] == 0, figures
        # down about as long as a lease lasts: a job running when it went down may run
        # again (its lease lapsed), at most one per slot of the two workers
        assert figures["ran_twice"] <= 2 * 10, figures
        for worker in workers:
            assert worker.poll() is None, log_of(worker)
    finally:
        producing.clear()
        if producer.is_alive():
            producer.join(60)
        codes = stop_all(workers)
        counts.close()
        pg.remove()
    assert codes == [0, 0], [log_of(w)[-2000:] for w in workers]


@pytest.mark.timeout(300)  # real processes and faults on a loaded box
def test_embedded_broker_killed_under_load_is_started_again_by_a_worker(
    tmp_path: Path, fresh_redis_url: str, app: tuple[str, str]
) -> None:
    roots, app_dir = app
    project = Path(app_dir)
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "faults"\nversion = "0"\n\n[tool.domainjobs]\nroots = ["{roots}"]\n'
    )
    settings = load_settings({"app_dir": str(project)}, environ={})
    paths = BrokerPaths.for_settings(settings)
    env = {"DOMAINJOBS_EMBEDDED": "true"}
    counts = Counts(fresh_redis_url)
    workers = [
        start_worker(
            None, roots, app_dir, fresh_redis_url, "--concurrency", "10", cwd=project, env=env
        )
        for _ in range(2)
    ]
    try:
        wait_for(lambda: ping(paths.client_socket()) == "ok", timeout=60, what="the broker")
        keys = asyncio.run(enqueue_at(paths.url(), "faults.touch", 2000, work_ms=30))
        time.sleep(1.5)  # appendfsync everysec: the enqueued jobs are on disk by now
        wait_for(lambda: sum(counts.done(keys)) >= 400, timeout=120, what="load")
        old_pid = read_pid(paths)
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            lambda: read_pid(paths) not in (None, old_pid) and ping(paths.client_socket()) == "ok",
            timeout=60,
            what="a worker to start the broker again",
        )
        statuses = wait_all_done(read_statuses(paths.url(), keys), len(keys), timeout=120)
        figures = summary(statuses, counts.runs(keys), counts.done(keys))
        print(f"embedded broker kill -9: {figures}")
        assert figures["lost"] == 0, figures
        logs = [log_of(w) for w in workers]
        assert sum("started it again" in log for log in logs) == 1, logs
        for worker, log in zip(workers, logs, strict=True):
            assert worker.poll() is None, log
            _quiet(log)
    finally:
        codes = stop_all(workers)
        counts.close()
        if ping(paths.client_socket()) == "ok":
            stop_broker(paths, timeout=10)
    assert codes == [0, 0], [log_of(w)[-2000:] for w in workers]
