"""The core behaviours on every broker: a real Redis server, a real PostgreSQL cluster (a
fresh database per test) and the embedded Valkey server. Workers built from discovery run
enqueued jobs, ``apply`` returns results, hooks run once per process, and two domains'
same-named cron jobs are both scheduled and both fire."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from saq import Queue

from domainjobs import build_worker, build_workers, discover, run_workers
from domainjobs.brokers.embedded import BrokerPaths, ensure_broker, stop_broker
from domainjobs.brokers.urls import queue_from_url
from tests.conftest import run_cli

BROKERS = ["redis", "postgres", "embedded"]


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the session's PostgreSQL cluster."""
    import psycopg

    name = f"dj_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def embedded_url(tmp_path: Path) -> Iterator[str]:
    """The embedded broker of a project whose data dir is in ``tmp_path``."""
    paths = BrokerPaths(tmp_path / "data" / "broker")
    yield ensure_broker(paths).url
    stop_broker(paths)


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> str:
    """The same test on Redis, PostgreSQL and the embedded broker."""
    fixture = {"redis": "redis_url", "postgres": "fresh_postgres_url", "embedded": "embedded_url"}
    return str(request.getfixturevalue(fixture[request.param]))


@pytest.fixture
async def connect() -> AsyncIterator:
    """Connect client queues (through domainjobs' URL handling); disconnect them after."""
    opened: list[Queue] = []

    async def open_queue(url: str, name: str = "default") -> Queue:
        queue = queue_from_url(url, name)
        await queue.connect()
        opened.append(queue)
        return queue

    yield open_queue
    for queue in opened:
        await queue.disconnect()


async def settle(job, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        await job.refresh()
        if job.status in ("complete", "failed", "aborted"):
            return job
        assert time.monotonic() < deadline, f"job {job.key} still {job.status}"
        await asyncio.sleep(0.02)


async def stop(workers, runner: asyncio.Task) -> int:
    for worker in workers:
        await worker.stop()
    return await asyncio.wait_for(runner, 60)


APP = {
    "app/domain/calc/jobs/startup.py": """
        import os
        def open_resource(ctx):
            ctx["opened"] = ctx.get("opened", 0) + 1
            ctx["order"] = ["calc.open"]
    """,
    "app/domain/calc/jobs/shutdown.py": """
        import os
        def close_resource(ctx):
            with open(os.environ["DJ_TEST_LOG"], "a") as f:
                f.write("calc.close\\n")
    """,
    "app/domain/calc/jobs/tasks.py": """
        async def add(ctx, x: int, y: int) -> int:
            return x + y

        def times(ctx, x: int, y: int) -> int:
            return x * y

        async def opened(ctx) -> int:
            return ctx["opened"]
    """,
    "app/domain/mail/jobs/__init__.py": 'job_defaults = {"queue": "mail"}\n',
    "app/domain/mail/jobs/startup.py": """
        def second(ctx):
            ctx["order"].append("mail.open")
    """,
    "app/domain/mail/jobs/shutdown.py": """
        import os
        def broken_close(ctx):
            with open(os.environ["DJ_TEST_LOG"], "a") as f:
                f.write("mail.close\\n")
            raise RuntimeError("close failed")
    """,
    "app/domain/mail/jobs/tasks.py": """
        async def order(ctx) -> list:
            return ctx["order"]
    """,
}

CLEANUP = """
    import os
    from domainjobs import cron

    @cron("* * * * * *")
    async def cleanup(ctx):
        with open(os.environ["DJ_TEST_LOG"], "a") as f:
            f.write(__name__.split(".")[-3] + "\\n")
"""


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "log"
    monkeypatch.setenv("DJ_TEST_LOG", str(path))
    return path


async def test_a_discovered_worker_runs_jobs_and_apply_returns(make_app, broker_url, log, connect):
    base = make_app(APP)
    registry = discover(f"{base.name}.domain")
    worker = build_worker(registry, queue="default", url=broker_url)
    assert set(worker.functions) == {"calc.add", "calc.times", "calc.opened"}
    client = await connect(broker_url)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))
    try:
        job = await settle(await client.enqueue("calc.times", x=6, y=7))
        assert (job.status, job.result) == ("complete", 42)
        assert await client.apply("calc.add", x=2, y=3) == 5
        results = await client.map("calc.add", [{"x": n, "y": n} for n in range(5)])
        assert results == [0, 2, 4, 6, 8]
    finally:
        await stop([worker], runner)


async def test_hooks_run_once_per_process_on_every_broker(make_app, broker_url, log, connect):
    base = make_app(APP)
    workers = build_workers(discover(f"{base.name}.domain"), url=broker_url)
    assert sorted(w.queue.name for w in workers) == ["default", "mail"]
    default, mail = await connect(broker_url), await connect(broker_url, "mail")
    runner = asyncio.create_task(run_workers(workers, handle_signals=False))
    try:
        assert await default.apply("calc.opened") == 1
        assert await mail.apply("mail.order") == ["calc.open", "mail.open"]
    finally:
        status = await stop(workers, runner)
    assert log.read_text().splitlines() == ["mail.close", "calc.close"]
    assert status == 1  # a shutdown hook raised


async def test_same_named_cron_jobs_of_two_domains_are_both_scheduled_and_fire(
    make_app, broker_url, log
):
    base = make_app({"app/domain/a/jobs/tasks.py": CLEANUP, "app/domain/b/jobs/tasks.py": CLEANUP})
    worker = build_worker(discover(f"{base.name}.domain"), url=broker_url)
    await worker.queue.connect()
    try:
        await worker.schedule()
        found = [job async for job in worker.queue.iter_jobs()]
        # one job per tick, keyed by public name and tick time: the two never collide
        assert {job.key.rsplit(":", 1)[0] for job in found} == {"cron:a.cleanup", "cron:b.cleanup"}
        assert {job.function for job in found} == {"a.cleanup", "b.cleanup"}
    finally:
        await worker.queue.disconnect()
    worker = build_worker(discover(f"{base.name}.domain"), url=broker_url)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))
    try:
        deadline = time.monotonic() + 20
        while not (log.exists() and {"a", "b"} <= set(log.read_text().split())):
            assert time.monotonic() < deadline, "both cron jobs should fire"
            await asyncio.sleep(0.05)
    finally:
        await stop([worker], runner)


def test_run_burst_on_postgres_from_the_command_line(make_app, fresh_postgres_url, log, tmp_path):
    base = make_app(APP)
    # trust authentication ignores the password, so it can be a secret that must not leak
    secret = "pg-S3cret-pw"
    url = fresh_postgres_url.replace("postgres@", f"postgres:{secret}@", 1)

    async def enqueue() -> list[str]:
        keys = []
        for name, queue_name, kwargs in [
            ("calc.add", "default", {"x": 1, "y": 2}),
            ("mail.order", "mail", {}),
        ]:
            queue = queue_from_url(url, queue_name)
            await queue.connect()
            job = await queue.enqueue(name, **kwargs)
            keys.append((queue_name, job.key))
            await queue.disconnect()
        return keys

    keys = asyncio.run(enqueue())
    result = run_cli(
        "run", "--burst", "--roots", f"{base.name}.domain", "--app-dir", str(tmp_path),
        env={"DOMAINJOBS_URL": url},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # mail's shutdown hook raises on purpose
    assert secret not in result.stdout + result.stderr
    assert "postgres:***@" in result.stderr

    async def statuses() -> list[str]:
        found = []
        for queue_name, key in keys:
            queue = queue_from_url(url, queue_name)
            await queue.connect()
            job = await queue.job(key)
            found.append(job.status if job else "missing")
            await queue.disconnect()
        return found

    assert asyncio.run(statuses()) == ["complete", "complete"]


class RestartableCluster:
    """A throwaway PostgreSQL cluster of its own that a test can restart."""

    def __init__(self) -> None:
        import os
        import shutil
        import tempfile

        from tests.servers import free_port, postgres_binaries

        bindir = postgres_binaries()
        assert bindir, "PostgreSQL server binaries are needed (apt-get install postgresql)"
        self.bindir = bindir
        self.work = Path(tempfile.mkdtemp(prefix="dj-pg-restart-"))
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(self.work, "nobody")
            self.run_as = ["runuser", "-u", "nobody", "--"]
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        import subprocess

        command = [*self.run_as, str(self.bindir / program), *args]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        data = str(self.work / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
        self.pg_ctl("start")

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.work} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.work / "data"), "-w", "-l", str(self.work / "log"),
                  "-o", options, *args)  # fmt: skip

    def remove(self) -> None:
        import shutil

        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.work / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.work, ignore_errors=True)


async def test_a_postgres_worker_carries_on_after_the_database_restarts(make_app, log):
    cluster = RestartableCluster()
    await asyncio.to_thread(cluster.start)
    base = make_app(APP)
    worker = build_worker(discover(f"{base.name}.domain"), url=cluster.url, concurrency=2)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))
    try:
        client = queue_from_url(cluster.url, "default")
        await client.connect()
        assert await client.apply("calc.add", x=1, y=1) == 2
        await client.disconnect()
        await asyncio.to_thread(cluster.pg_ctl, "restart", "-m", "fast")
        client = queue_from_url(cluster.url, "default")
        await client.connect()
        job = await settle(await client.enqueue("calc.add", x=2, y=2), timeout=30)
        assert (job.status, job.result) == ("complete", 4)
        await client.disconnect()
        assert not runner.done(), "the worker must carry on"
    finally:
        await stop([worker], runner)
        await asyncio.to_thread(cluster.remove)
