"""Shared fixtures: real servers, a fresh broker per test, and apps built on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from saq.queue.redis import RedisQueue

from domainjobs.brokers.redis import SweepSafeRedisQueue
from tests.servers import postgres_server, redis_server

# A test that forgets its broker URL must fail, not quietly start the embedded server in
# the working tree: tests of the embedded broker turn it back on themselves.
os.environ["DOMAINJOBS_EMBEDDED"] = "false"

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """One real Redis-protocol server for the session (or DOMAINJOBS_TEST_REDIS_URL)."""
    env_url = os.environ.get("DOMAINJOBS_TEST_REDIS_URL")
    if env_url:
        yield env_url
        return
    with redis_server() as url:
        yield url


_db_counter = iter(range(1, 16))


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A URL to an empty database on the session's server, flushed after the test."""
    client = redis.Redis.from_url(redis_base_url)
    client.flushall()
    yield redis_base_url
    client.flushall()
    client.close()


@pytest.fixture
async def queue_pair(redis_url: str) -> AsyncIterator[tuple[SweepSafeRedisQueue, RedisQueue]]:
    """Our queue and a plain SAQ ``RedisQueue`` on queue ``default`` of one fresh server."""
    ours = SweepSafeRedisQueue.from_url(redis_url, name="default")
    plain = RedisQueue.from_url(redis_url, name="default")
    await ours.connect()
    await plain.connect()
    try:
        yield ours, plain  # type: ignore[misc]
    finally:
        await ours.disconnect()
        await plain.disconnect()


@pytest.fixture
def fresh_redis_url() -> Iterator[str]:
    """A brand-new server of its own (for tests about a fresh broker's first moments)."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (or DOMAINJOBS_TEST_POSTGRES_URL)."""
    env_url = os.environ.get("DOMAINJOBS_TEST_POSTGRES_URL")
    if env_url:
        yield env_url
        return
    with postgres_server() as url:
        yield url


AppFactory = Callable[[dict[str, str]], Path]


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppFactory]:
    """Build an app on disk from ``{relative path: source}`` and put it on sys.path.

    Every ``__init__.py`` a path needs is created. Each call uses a fresh top-level package
    name, substituted for ``app`` in paths and sources, so tests never share modules.
    """
    created: list[str] = []

    def build(files: dict[str, str], package: str | None = None) -> Path:
        top = package or f"app_{uuid.uuid4().hex[:8]}"
        base = tmp_path / top
        for rel, source in files.items():
            rel = rel.replace("app/", f"{top}/", 1) if rel.startswith("app/") else rel
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).replace("app.", f"{top}."))
            folder = path.parent
            while folder != tmp_path and folder.is_relative_to(tmp_path):
                init = folder / "__init__.py"
                if not init.exists():
                    init.write_text("")
                folder = folder.parent
        created.append(top)
        return base

    monkeypatch.syspath_prepend(str(tmp_path))
    yield build
    for top in created:
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m domainjobs ARGS`` in a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DOMAINJOBS_URL", None) if env is None or "DOMAINJOBS_URL" not in env else None
    result = subprocess.run(
        [sys.executable, "-m", "domainjobs", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
