"""Helpers for the fault tests (tests/test_faults_*.py): a fixture app whose tasks count
their runs and completions in a separate counter Redis, worker processes, a Redis server
that can be killed and restarted on the same port, and reading results back.

Every task INCRs ``runs:<job key>`` first thing (and pushes the time to ``starts:<key>``)
and ``done:<job key>`` as its last step, so a test can tell a job that ran twice from one
whose body completed twice.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from saq.queue import Queue

from domainjobs.brokers.urls import queue_from_url
from tests.servers import free_port, redis_server_binary, wait_for
from tests.sweep_helpers import ROOT, stop, worker_env

TASKS = """
    import asyncio
    import os
    import random
    import sys
    import time

    import redis
    import redis.asyncio as aioredis

    _client = None


    def _counter():
        global _client
        if _client is None:
            _client = aioredis.from_url(os.environ["SWEEP_COUNTER_URL"])
        return _client


    def _sync():
        return redis.Redis.from_url(os.environ["SWEEP_COUNTER_URL"])


    async def _start(ctx):
        key = ctx["job"].key
        await _counter().rpush("starts:" + key, repr(time.time()))
        return await _counter().incr("runs:" + key)


    async def touch(ctx, work_ms: int = 0) -> int:
        runs = await _start(ctx)
        if work_ms:
            await asyncio.sleep(random.uniform(0, work_ms) / 1000)
        await _counter().incr("done:" + ctx["job"].key)
        return runs


    def slow(ctx, seconds: float = 12.0) -> None:
        key = ctx["job"].key
        client = _sync()
        client.rpush("starts:" + key, repr(time.time()))
        client.incr("runs:" + key)
        time.sleep(seconds)
        client.incr("done:" + key)


    async def exit_now(ctx, code: int = 3) -> None:
        await _start(ctx)
        sys.exit(code)


    def interrupt(ctx) -> None:
        _sync().incr("runs:" + ctx["job"].key)
        raise KeyboardInterrupt


    async def block(ctx, seconds: float = 15.0) -> None:
        await _start(ctx)
        time.sleep(seconds)  # blocks the event loop: the point of the test
        await _counter().incr("done:" + ctx["job"].key)
"""

CRON = """
    import os

    import redis.asyncio as aioredis

    from domainjobs import cron

    _client = None


    @cron("* * * * * *")
    async def every_second(ctx) -> None:
        global _client
        if _client is None:
            _client = aioredis.from_url(os.environ["SWEEP_COUNTER_URL"])
        job = ctx["job"]
        await _client.incr("tick:%d" % job.scheduled)
        if "domainjobs_lost" in (job.meta or {}):  # put back: its first run's host was lost
            await _client.incr("rerun:%d" % job.scheduled)
"""


def fault_app(make_app: Callable[..., Path], *, with_cron: bool = False) -> tuple[str, str]:
    """Build the fixture app; return (its domains root, the --app-dir to run it from)."""
    files = {"app/domain/faults/jobs/tasks.py": TASKS}
    if with_cron:
        files["app/domain/faults/jobs/scheduled.py"] = CRON
    base = make_app(files)
    return f"{base.name}.domain", str(base.parent)


def start_worker(
    url: str | None,
    roots: str,
    app_dir: str,
    counter_url: str,
    *extra: str,
    prefix: Sequence[str] = (),
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``[prefix] python -m domainjobs run [--url URL] --roots ROOTS --app-dir DIR [extra]``,
    its stderr kept in a file (``log_of``)."""
    log = tempfile.NamedTemporaryFile(prefix="dj-worker-", suffix=".log", delete=False)  # noqa: SIM115
    args = [*prefix, sys.executable, "-m", "domainjobs", "run"]
    if url is not None:
        args += ["--url", url]
    args += ["--roots", roots, "--app-dir", app_dir, *extra]
    proc = subprocess.Popen(
        args,
        cwd=cwd or ROOT,
        env={**worker_env(counter_url), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    return proc


def log_of(proc: subprocess.Popen[bytes]) -> str:
    """Everything a worker started by ``start_worker`` wrote to stderr so far."""
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def stop_all(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 40) -> list[int]:
    """SIGTERM every process still running; SIGKILL what is left after ``timeout``."""
    return stop(processes, timeout)


class Counts:
    """Reads the counter Redis."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def _many(self, prefix: str, keys: Sequence[str]) -> list[int]:
        values: list[Any] = []
        for start in range(0, len(keys), 1000):
            values += self.client.mget([f"{prefix}:{k}" for k in keys[start : start + 1000]])
        return [int(v) if v is not None else 0 for v in values]

    def runs(self, keys: Sequence[str]) -> list[int]:
        """How often each job's task started."""
        return self._many("runs", keys)

    def done(self, keys: Sequence[str]) -> list[int]:
        """How often each job's task body completed."""
        return self._many("done", keys)

    def starts(self, key: str) -> list[float]:
        """When each run of a job's task started (epoch seconds)."""
        return [float(v) for v in self.client.lrange(f"starts:{key}", 0, -1)]

    def ticks(self, prefix: str = "tick") -> dict[int, int]:
        """How often each tick of the per-second cron ran, by tick (epoch seconds);
        ``prefix="rerun"``: how often it ran again after its host was lost."""
        keys = [k.decode() for k in self.client.scan_iter(f"{prefix}:*", count=1000)]
        values = self.client.mget(keys) if keys else []
        return {int(k.split(":")[1]): int(v) for k, v in zip(keys, values, strict=True)}

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def summary(statuses: Counter[str], runs: list[int], done: list[int]) -> dict[str, Any]:
    """The figures of one scenario, as the reliability table reports them."""
    return {
        "enqueued": len(runs),
        "statuses": dict(statuses),
        "lost": len(runs) - statuses.get("complete", 0),
        "ran_twice": sum(1 for r in runs if r > 1),
        "completed_twice": sum(1 for d in done if d > 1),
        "max_runs": max(runs, default=0),
    }


async def statuses_of(queue: Queue, keys: Sequence[str]) -> Counter[str]:
    """Every job's stored status (``missing`` when gone)."""
    counts: Counter[str] = Counter()
    for start in range(0, len(keys), 500):
        for job in await queue.jobs(keys[start : start + 500]):
            counts[job.status.value if job is not None else "missing"] += 1
    return counts


def read_statuses(url: str, keys: Sequence[str]) -> Callable[[], Counter[str]]:
    """A function that reads the statuses of ``keys`` on the ``default`` queue at ``url``
    (for ``wait_all_done``), each call on a connection of its own."""

    async def read() -> Counter[str]:
        queue = queue_from_url(url, "default")
        await queue.connect()
        try:
            return await statuses_of(queue, keys)
        finally:
            await queue.disconnect()

    return lambda: asyncio.run(read())


async def enqueue_many(queue: Queue, name: str, n: int, **kwargs: Any) -> list[str]:
    """Enqueue ``n`` jobs of ``name`` in batches; return their keys."""
    keys: list[str] = []
    for start in range(0, n, 200):
        jobs = await asyncio.gather(
            *(queue.enqueue(name, **kwargs) for _ in range(min(200, n - start)))
        )
        keys += [job.key for job in jobs if job is not None]
    return keys


async def enqueue_at(url: str, name: str, n: int, **kwargs: Any) -> list[str]:
    """Enqueue ``n`` jobs of ``name`` on queue ``default`` of the broker at ``url``."""
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        return await enqueue_many(queue, name, n, **kwargs)
    finally:
        await queue.disconnect()


def wait_all_done(
    check: Callable[[], Counter[str]], n: int, timeout: float, what: str = "every job"
) -> Counter[str]:
    """Poll the jobs' statuses until all ``n`` are complete (or the deadline passes)."""
    last: list[Counter[str]] = [Counter()]

    def complete() -> bool:
        last[0] = check()
        return last[0].get("complete", 0) == n

    try:
        wait_for(complete, timeout=timeout, interval=0.5, what=f"{what} to complete")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {dict(last[0])}") from None
    return last[0]


class RestartableRedis:
    """A Redis-protocol server with an append-only file, killable (SIGKILL) and restartable
    on the same port and data folder. ``fsync``: the server's ``appendfsync``."""

    def __init__(self, *, fsync: str = "always", bind: str = "127.0.0.1") -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no Redis-protocol server found")
        self.binary = binary
        self.port = free_port()
        self.bind = bind
        self.fsync = fsync
        self.folder = Path(tempfile.mkdtemp(prefix="dj-aof-"))
        self.socket = self.folder / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its TCP URL."""
        return f"redis://{self.bind}:{self.port}/0"

    def start(self, prefix: Sequence[str] = ()) -> None:
        """Start the server (loading its append-only file) and wait until it answers."""
        self.process = subprocess.Popen(
            [
                *prefix,
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.bind,
                "--unixsocket",
                str(self.socket),
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                # only reachable on loopback or a test's own namespace address
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket))

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(up, timeout=30, what="the Redis server to answer")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final fsync)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop it for good and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        subprocess.run(["rm", "-rf", str(self.folder)], check=False)


@contextmanager
def restartable_redis(**kwargs: Any) -> Iterator[RestartableRedis]:
    """A started ``RestartableRedis``, stopped afterwards."""
    server = RestartableRedis(**kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (``time.monotonic``)."""
    return time.monotonic() - start


def os_pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


INITDB_OPTIONS = ("-U", "postgres", "-A", "trust", "--no-sync")
IMMEDIATE_STOP = ("-m", "immediate", "stop")


class RestartablePostgres:
    """A throwaway PostgreSQL cluster that can be stopped (``pg_ctl stop -m immediate``, a
    crash for the clients) and started again on the same port."""

    def __init__(self) -> None:
        from tests.servers import postgres_binaries

        bindir = postgres_binaries()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server found: apt-get install postgresql")
        self.bindir = bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="dj-pgfault-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as 'nobody'
            import shutil

            shutil.chown(self.workdir, "nobody")
            self.run_as = ["runuser", "-u", "nobody", "--"]
        subprocess.run(
            [*self.run_as, str(bindir / "initdb"), "-D", str(self.data), *INITDB_OPTIONS],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        """Its URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start (and wait for) the server."""
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        self._ctl("-w", "-l", str(self.workdir / "log"), "-o", options, "start")

    def restart(self) -> None:
        """``pg_ctl restart`` (fast shutdown: the server ends every session with an error),
        as a stop and a start so that the server keeps its log file."""
        self._ctl("-m", "fast", "-w", "stop")
        self.start()

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every connection drops, no clean shutdown."""
        self._ctl("-m", "immediate", "stop")

    def remove(self) -> None:
        """Stop it for good and remove its files."""
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), *IMMEDIATE_STOP],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(["rm", "-rf", str(self.workdir)], check=False)
