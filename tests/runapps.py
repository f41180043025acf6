"""Fixture apps and helpers for the ``run`` tests: jobs that record what they did in Redis
(so counts survive the processes that ran them), and a running ``domainjobs run``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saq import Queue

from tests.servers import wait_for

#: Tasks of domain "work". Each records in Redis (key prefix = the app's package name).
WORK_TASKS = '''
import asyncio, os, time
import redis.asyncio as aioredis

PREFIX = __name__.split(".")[0]
URL = os.environ["TEST_REDIS_URL"]


async def _client():
    return aioredis.from_url(URL)


async def sleepy(ctx, n: int, seconds: float = 0.2) -> int:
    r = await _client()
    await r.rpush(f"{PREFIX}:started", f"{n}:{os.getpid()}:{ctx['job'].attempts}")
    await asyncio.sleep(seconds)
    await r.rpush(f"{PREFIX}:done", n)
    await r.aclose()
    return n


async def once_slow(ctx, n: int) -> int:
    """Hangs on its first attempt (so a test can kill its worker), is quick after."""
    r = await _client()
    await r.rpush(f"{PREFIX}:started", f"{n}:{os.getpid()}:{ctx['job'].attempts}")
    if ctx["job"].attempts == 1:
        await asyncio.sleep(600)
    await r.rpush(f"{PREFIX}:done", n)
    await r.aclose()
    return n


async def noop(ctx) -> None:
    return None


async def boom(ctx) -> None:
    raise RuntimeError("boom from a test job")
'''

HOOKS_SHUTDOWN = """
import os
import redis

def record_shutdown(ctx):
    prefix = __name__.split(".")[0]
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).rpush(f"{prefix}:shutdown", os.getpid())
"""


def work_app(make_app: Any, extra: dict[str, str] | None = None) -> Path:
    """An app with domain ``work`` (the tasks above) and a shutdown hook."""
    files = {
        "app/domain/work/jobs/tasks.py": WORK_TASKS,
        "app/domain/work/jobs/shutdown.py": HOOKS_SHUTDOWN,
        **(extra or {}),
    }
    return make_app(files)


def enqueue(
    url: str, function: str, count: int = 1, queue: str = "default", **options: Any
) -> list[str]:
    """Enqueue ``count`` jobs of ``function`` (kwargs ``n=i`` when it takes ``n``); their keys."""

    async def go() -> list[str]:
        q = Queue.from_url(url, name=queue)
        await q.connect()
        keys = []
        try:
            for i in range(count):
                kwargs = {"n": i} if function.endswith(("sleepy", "once_slow")) else {}
                job = await q.enqueue(function, **kwargs, **options)
                assert job is not None
                keys.append(job.key)
        finally:
            await q.disconnect()
        return keys

    return asyncio.run(go())


def job_statuses(url: str, keys: Sequence[str], queue: str = "default") -> dict[str, str]:
    """Each job's status in the broker."""

    async def go() -> dict[str, str]:
        q = Queue.from_url(url, name=queue)
        await q.connect()
        try:
            jobs = await q.jobs(keys)
            return {
                k: (j.status.value if j else "missing") for k, j in zip(keys, jobs, strict=True)
            }
        finally:
            await q.disconnect()

    return asyncio.run(go())


class Running:
    """A ``python -m domainjobs run ...`` subprocess whose stderr is collected as it comes."""

    def __init__(
        self, args: Sequence[str], app_dir: Path, url: str, env: dict[str, str] | None = None
    ):
        full_env = {**os.environ, "TEST_REDIS_URL": url, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("DOMAINJOBS_URL", None)
        root = f"{app_dir.name}.domain"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "domainjobs",
                "run",
                "--url",
                url,
                "--roots",
                root,
                "--app-dir",
                str(app_dir.parent),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=str(app_dir.parent),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_log(self, text: str, timeout: float = 20, count: int = 1) -> None:
        wait_for(
            lambda: self.log.count(text) >= count or self.process.poll() is not None,
            timeout=timeout,
            what=f"{text!r} in the log",
        )
        assert self.log.count(text) >= count, f"{text!r} not in the log:\n{self.log}"

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s; log:\n{self.log}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self.process.stdout:
            self.process.stdout.close()
