"""Helpers for the sweep-race tests: a fixture app whose tasks count their runs in Redis,
worker processes, and reading every job's final status from the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from saq.queue import Queue

ROOT = Path(__file__).resolve().parent.parent

#: The fixture app: every task INCRs ``runs:<job key>`` in the counter Redis first thing.
RACE_APP = {
    "app/domain/race/jobs/tasks.py": """
        import asyncio
        import os
        import random

        import redis.asyncio as aioredis

        _client = None


        def _counter():
            global _client
            if _client is None:
                _client = aioredis.from_url(os.environ["SWEEP_COUNTER_URL"])
            return _client


        async def touch(ctx, work_ms: int = 0) -> int:
            runs = await _counter().incr("runs:" + ctx["job"].key)
            if work_ms:
                await asyncio.sleep(random.uniform(0, work_ms) / 1000)
            return runs


        async def hang(ctx, seconds: float = 60.0) -> int:
            runs = await _counter().incr("runs:" + ctx["job"].key)
            if runs == 1:
                await asyncio.sleep(seconds)
            return runs
    """,
}


def race_app(make_app: Callable[..., Path]) -> tuple[str, str]:
    """Build the fixture app; return (its domains root, the --app-dir to run it from)."""
    base = make_app(RACE_APP)
    return f"{base.name}.domain", str(base.parent)


def worker_env(counter_url: str) -> dict[str, str]:
    """The environment of a worker process (the src tree first, the counter's URL)."""
    env = {**os.environ, "SWEEP_COUNTER_URL": counter_url}
    env.pop("DOMAINJOBS_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def start_cli_worker(
    url: str, roots: str, app_dir: str, counter_url: str, *extra: str
) -> subprocess.Popen[bytes]:
    """``python -m domainjobs run --url URL --roots ROOTS --app-dir DIR [extra]``."""
    log = _log_file()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "domainjobs",
            "run",
            "--url",
            url,
            "--roots",
            roots,
            "--app-dir",
            app_dir,
            *extra,
        ],
        env=worker_env(counter_url),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def start_script_worker(
    url: str,
    roots: str,
    app_dir: str,
    counter_url: str,
    *,
    sweep: float,
    queue_kwargs: str = "{}",
    plain: bool = False,
    burst: bool = False,
) -> subprocess.Popen[bytes]:
    """``tests/sweep_worker.py``: a worker with a short sweep period (or a plain SAQ one)."""
    args = [
        sys.executable,
        "-m",
        "tests.sweep_worker",
        url,
        roots,
        app_dir,
        str(sweep),
        queue_kwargs,
    ]
    if plain:
        args.append("--plain")
    if burst:
        args.append("--burst")
    log = _log_file()
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=worker_env(counter_url),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def _log_file() -> Any:
    """A file for a worker's stderr (a pipe nobody reads would block a chatty worker)."""
    return tempfile.TemporaryFile()


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """The tail of a worker process's stderr, for assertion messages."""
    log = getattr(proc, "log_file", None)
    if log is None:
        return ""
    log.seek(0)
    return str(log.read().decode(errors="replace")[-3000:])


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> list[int]:
    """SIGTERM each still-running process and return every exit code."""
    procs = list(processes)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def run_counts(counter_url: str, keys: list[str]) -> list[int]:
    """How often each job's task ran (0 when never)."""
    client = redis.Redis.from_url(counter_url)
    try:
        values = client.mget([f"runs:{key}" for key in keys]) if keys else []
        return [int(v) if v is not None else 0 for v in values]
    finally:
        client.close()


async def final_statuses(queue: Queue, keys: list[str]) -> Counter[str]:
    """Every job's status as stored in the broker (``missing`` when gone)."""
    counts: Counter[str] = Counter()
    for start in range(0, len(keys), 500):
        for job in await queue.jobs(keys[start : start + 500]):
            counts[job.status.value if job is not None else "missing"] += 1
    return counts


def summary(statuses: Counter[str], runs: list[int]) -> dict[str, Any]:
    """A readable account of a run for assertion messages."""
    return {
        "statuses": dict(statuses),
        "never_ran": sum(1 for r in runs if r == 0),
        "ran_twice_or_more": sum(1 for r in runs if r > 1),
    }
