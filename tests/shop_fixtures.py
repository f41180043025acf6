"""Fixtures for tests that drive the shop example from the command line: ``env`` (its
environment on the test's Redis) and ``worker`` (a real ``python -m domainjobs run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

SHOP = EXAMPLES / "shop"


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The shop's environment: the test's Redis and a private accounts database."""
    return {"DOMAINJOBS_URL": redis_url, "SHOP_ACCOUNTS_DB": str(tmp_path / "accounts.db")}


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A shop worker process; it must stop cleanly (exit 0) on SIGTERM at the end."""
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "domainjobs", "run"],
            cwd=SHOP, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield process
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log.read_text()
