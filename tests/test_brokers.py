"""Broker URLs, password redaction, waiting for a broker that is down at start, and a worker
that carries on after its Redis server restarts: real servers and real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from saq import Queue

from domainjobs import ConfigError, build_worker, discover, run_workers
from domainjobs.brokers.redis import SweepSafeRedisQueue
from domainjobs.brokers.urls import queue_from_url, redact, scrub, wait_for_broker
from domainjobs.errors import BrokerUnreachableError
from tests.conftest import run_cli
from tests.servers import free_port, redis_server_binary, wait_for

SECRET = "s3cr3t-Pa55word"


def ping(port: int, password: str | None = None) -> bool:
    try:
        return bool(redis.Redis(port=port, password=password, socket_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError):
        return False


class Server:
    """A real Redis-protocol server on a fixed port, with its data in ``folder`` (so it can
    be killed and started again on the same port with the same data)."""

    def __init__(self, port: int, folder: Path, *extra: str, password: str | None = None):
        self.port, self.folder, self.extra, self.password = port, folder, extra, password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        binary = redis_server_binary()
        assert binary, "a Redis-protocol server is needed"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", *self.extra]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: ping(self.port, self.password), what=f"server on port {self.port}")
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[Server]]:
    made: list[Server] = []

    class Tracked(Server):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Tracked
    for server in made:
        server.kill()


# -- URL forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis://127.0.0.1:6390/2", {"host": "127.0.0.1", "port": 6390, "db": 2}),
        ("valkey://127.0.0.1:6390", {"host": "127.0.0.1", "port": 6390}),
        ("unix:///run/valkey/valkey.sock?db=3", {"path": "/run/valkey/valkey.sock", "db": 3}),
        ("unix://:pw@/run/r.sock", {"path": "/run/r.sock", "password": "pw"}),
    ],
)
def test_redis_url_forms_build_sweep_safe_queues(url, where):
    queue = queue_from_url(url, "mail")
    assert isinstance(queue, SweepSafeRedisQueue)
    assert queue.name == "mail"
    kwargs = queue.redis.connection_pool.connection_kwargs
    assert {k: kwargs.get(k) for k in where} == where


@pytest.mark.parametrize("scheme", ["rediss", "valkeys"])
def test_tls_urls_use_tls_connections(scheme):
    from redis.asyncio.connection import SSLConnection

    queue = queue_from_url(f"{scheme}://:pw@cache.example:6380/0", "default")
    assert queue.redis.connection_pool.connection_class is SSLConnection


def test_postgres_url_builds_a_postgres_queue():
    from saq.queue.postgres import PostgresQueue

    queue = queue_from_url("postgresql://user:pw@127.0.0.1:5432/jobs", "billing")
    assert isinstance(queue, PostgresQueue)
    assert queue.name == "billing"
    assert queue.pool.conninfo == "postgresql://user:pw@127.0.0.1:5432/jobs"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:6379", "is not a URL"),
        ("http://127.0.0.1:8080", "unsupported scheme 'http'"),
        ("amqp://guest:guest@rabbit//", "unsupported scheme 'amqp'"),
        ("redis://", "has no host"),
        ("redis://127.0.0.1:notaport/0", "not valid"),
        ("redis://127.0.0.1:6379/zero", "not a number"),
        ("redis://127.0.0.1:6379/0?bogus_option=1", "not valid"),
        ("unix://relative/path.sock", "absolute socket path"),
        ("postgresql://u@h:port/db", "not a number"),
        ("postgresql://u@h/db?bogus=1", "not valid"),
    ],
)
def test_malformed_or_unsupported_urls_are_config_errors_listing_the_forms(url, why):
    with pytest.raises(ConfigError) as caught:
        queue_from_url(url, "default")
    message = str(caught.value)
    assert why in message
    for form in ("redis://", "rediss://", "unix://", "valkey://", "postgresql://"):
        assert form in message


def test_errors_about_a_url_never_show_its_password():
    with pytest.raises(ConfigError) as caught:
        queue_from_url(f"redis://admin:{SECRET}@127.0.0.1:notaport/0", "default")
    assert SECRET not in str(caught.value)
    assert "admin:***@" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"rediss://user:{SECRET}@h:6380", "rediss://user:***@h:6380"),
        (f"postgresql://app:{SECRET}@db/jobs", "postgresql://app:***@db/jobs"),
        (f"postgresql://app@db/jobs?password={SECRET}&sslmode=require",
         "postgresql://app@db/jobs?password=***&sslmode=require"),
        (f"unix://:{SECRET}@/run/r.sock?db=1", "unix://:***@/run/r.sock?db=1"),
        ("unix:///run/r.sock", "unix:///run/r.sock"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)  # fmt: skip
def test_redact(url, expected):
    assert redact(url) == expected
    assert SECRET not in scrub(f"failed to reach {url}: boom", url)


# -- passwords stay out of what the CLI prints --------------------------------------------

TASKS = """
    async def add(ctx, x: int, y: int) -> int:
        return x + y
"""


def test_run_with_a_password_url_never_prints_the_password(make_app, server_factory, tmp_path):
    port = free_port()
    server_factory(port, tmp_path, password=SECRET).start()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    base = make_app({"app/domain/calc/jobs/tasks.py": TASKS})

    async def enqueue() -> None:
        queue = Queue.from_url(url, name="default")
        await queue.connect()
        await queue.enqueue("calc.add", key="sum", x=2, y=3)
        await queue.disconnect()

    asyncio.run(enqueue())
    flags = ["--roots", f"{base.name}.domain", "--app-dir", str(tmp_path)]
    result = run_cli("run", "--burst", "--debug", *flags, env={"DOMAINJOBS_URL": url})
    assert result.returncode == 0, result.stderr
    job = asyncio.run(_fetch(url, "sum"))
    assert job is not None and (job.status, job.result) == ("complete", 5)
    commands = [
        ["list"], ["list", "--json"], ["check"], ["broker", "status"], ["status"],
        ["status", "--json"], ["enqueue", "calc.add", "--kwargs", '{"x": 1, "y": 1}'],
    ]  # fmt: skip
    for command in commands:
        other = run_cli(*command, *flags, env={"DOMAINJOBS_URL": url})
        # `broker status` is about the embedded broker, which is not running here (LSB: 3)
        assert other.returncode == (3 if command == ["broker", "status"] else 0), other.stderr
        assert SECRET not in other.stdout + other.stderr, command
    assert SECRET not in result.stdout + result.stderr
    assert ":***@127.0.0.1" in result.stderr  # the startup line names the broker, redacted


async def _fetch(url: str, key: str):
    queue = Queue.from_url(url, name="default")
    await queue.connect()
    try:
        return await queue.job(key)
    finally:
        await queue.disconnect()


def test_a_wrong_password_fails_fast_with_exit_1_and_no_password(
    make_app, server_factory, tmp_path
):
    port = free_port()
    server_factory(port, tmp_path, password=SECRET).start()
    wrong = f"{SECRET}-wrong"
    base = make_app({"app/domain/calc/jobs/tasks.py": TASKS})
    started = time.monotonic()
    result = run_cli(
        "run", "--burst", "--roots", f"{base.name}.domain", "--app-dir", str(tmp_path),
        env={"DOMAINJOBS_URL": f"redis://:{wrong}@127.0.0.1:{port}/0"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "refused the credentials" in result.stderr
    assert wrong not in result.stderr and SECRET not in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20, "a wrong password is not worth retrying"


def test_a_bad_url_on_the_command_line_exits_2_with_the_accepted_forms(make_app, tmp_path):
    base = make_app({"app/domain/calc/jobs/tasks.py": TASKS})
    result = run_cli(
        "run", "--burst", "--roots", f"{base.name}.domain", "--app-dir", str(tmp_path),
        "--url", f"redis://:{SECRET}@127.0.0.1:6379/db",
    )  # fmt: skip
    assert result.returncode == 2
    assert "accepted forms" in result.stderr and "postgresql://" in result.stderr
    assert SECRET not in result.stderr and "Traceback" not in result.stderr


# -- broker down at start ------------------------------------------------------------------


async def test_wait_for_broker_gives_up_after_the_timeout_with_a_line_per_attempt(caplog):
    port = free_port()
    queue = queue_from_url(f"redis://:{SECRET}@127.0.0.1:{port}/0", "default")
    started = time.monotonic()
    with (
        caplog.at_level("WARNING", logger="domainjobs"),
        pytest.raises(BrokerUnreachableError) as caught,
    ):
        await wait_for_broker(queue, timeout=2)
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 6
    attempts = [r.getMessage() for r in caplog.records if "unreachable (attempt" in r.getMessage()]
    assert len(attempts) >= 2
    assert f"127.0.0.1:{port}" in attempts[0] and "retrying in" in attempts[0]
    assert "unreachable for 2 s" in str(caught.value)
    assert SECRET not in str(caught.value) + "".join(attempts)
    await queue.redis.aclose()  # never connected: no pubsub to close


async def test_wait_for_broker_returns_once_the_server_comes_up(server_factory, tmp_path):
    port = free_port()
    queue = queue_from_url(f"redis://127.0.0.1:{port}/0", "default")
    waiting = asyncio.create_task(wait_for_broker(queue, timeout=30))
    await asyncio.sleep(0)  # the first attempt fails: nothing listens yet
    assert not waiting.done()
    await asyncio.to_thread(server_factory(port, tmp_path).start)
    await asyncio.wait_for(waiting, 15)
    await queue.connect()
    assert await queue.count("queued") == 0
    await queue.disconnect()


def test_run_waits_for_a_broker_that_starts_late(make_app, server_factory, tmp_path):
    port = free_port()
    base = make_app({"app/domain/calc/jobs/tasks.py": TASKS})
    command = [sys.executable, "-m", "domainjobs", "run", "--burst", "--roots",
               f"{base.name}.domain", "--app-dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "DOMAINJOBS_URL": f"redis://127.0.0.1:{port}/0"}
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "unreachable (attempt 1" in log.read_text(), what="a retry line")
        server_factory(port, tmp_path).start()
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "retrying in" in text and "reachable after" in text


def test_run_gives_up_after_connect_timeout_with_exit_1(make_app, tmp_path):
    base = make_app({"app/domain/calc/jobs/tasks.py": TASKS})
    started = time.monotonic()
    result = run_cli(
        "run", "--roots", f"{base.name}.domain", "--app-dir", str(tmp_path),
        env={"DOMAINJOBS_URL": f"redis://127.0.0.1:{free_port()}/0",
             "DOMAINJOBS_CONNECT_TIMEOUT": "2"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 20
    assert "unreachable (attempt 1" in result.stderr
    assert "error: broker redis://127.0.0.1:" in result.stderr
    assert "raise connect_timeout" in result.stderr and "Traceback" not in result.stderr


# -- broker lost while running -------------------------------------------------------------

STAMP_TASKS = """
    import os

    async def stamp(ctx, n: int) -> int:
        with open(os.environ["DJ_STAMPS"], "a") as f:
            f.write(f"{n}\\n")
        return n
"""


async def test_worker_reconnects_after_its_redis_server_restarts(
    make_app, server_factory, tmp_path, monkeypatch
):
    stamps = tmp_path / "stamps"
    monkeypatch.setenv("DJ_STAMPS", str(stamps))
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="dj-restart-"))
    server = server_factory(port, data).start()
    url = f"redis://127.0.0.1:{port}/0"
    base = make_app({"app/domain/t/jobs/tasks.py": STAMP_TASKS})
    worker = build_worker(discover(f"{base.name}.domain"), url=url, concurrency=2)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))

    async def done(*numbers: int) -> None:
        deadline = time.monotonic() + 30
        while not (stamps.exists() and set(numbers) <= set(map(int, stamps.read_text().split()))):
            assert time.monotonic() < deadline, f"jobs {numbers} never ran"
            await asyncio.sleep(0.05)

    try:
        client = Queue.from_url(url, name="default")
        await client.connect()
        await client.enqueue("t.stamp", n=1)
        await done(1)
        # queued before the outage, due while the server is down
        await client.enqueue("t.stamp", n=2, scheduled=time.time() + 1)
        await client.disconnect()
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(1.5)  # the worker's dequeue and upkeep fail meanwhile
        await asyncio.to_thread(server.start)
        client = Queue.from_url(url, name="default")
        await client.connect()
        await client.enqueue("t.stamp", n=3)
        await done(1, 2, 3)
        await client.disconnect()
        assert not runner.done(), "the worker must carry on, not stop"
    finally:
        await worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 30)
        shutil.rmtree(data, ignore_errors=True)
    assert sorted(map(int, stamps.read_text().split())) == [1, 2, 3]


async def test_wait_for_a_postgres_broker_gives_up_without_showing_the_password(caplog):
    port = free_port()
    queue = queue_from_url(f"postgresql://app:{SECRET}@127.0.0.1:{port}/jobs", "default")
    with (
        caplog.at_level("WARNING", logger="domainjobs"),
        pytest.raises(BrokerUnreachableError) as caught,
    ):
        await wait_for_broker(queue, timeout=1.5)
    message = str(caught.value)
    assert f"postgresql://app:***@127.0.0.1:{port}/jobs" in message
    assert "unreachable (attempt 1" in caplog.text
    assert SECRET not in message + caplog.text


async def test_wait_for_a_postgres_broker_that_is_up(postgres_url):
    queue = queue_from_url(postgres_url, "default")
    await wait_for_broker(queue, timeout=10)
    await queue.connect()
    assert await queue.count("queued") >= 0
    await queue.disconnect()
