"""The litestar-saq adapter with the real litestar-saq, against a real Redis server."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("litestar_saq")

from litestar_saq import SAQConfig, SAQPlugin

from domainjobs import Jobs, discover
from domainjobs.contrib.litestar import queue_configs
from tests.conftest import EXAMPLES
from tests.servers import wait_for

SHOP = EXAMPLES / "shop"


@pytest.fixture
def shop(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(SHOP))
    monkeypatch.setenv("SHOP_ACCOUNTS_DB", str(tmp_path / "accounts.sqlite3"))
    return discover("app.domain")


def test_queue_configs_register_public_names(shop, redis_url):
    configs = queue_configs(shop, url=redis_url, concurrency=3)
    assert [c.name for c in configs] == list(shop.queues)
    workers = SAQPlugin(config=SAQConfig(queue_configs=configs)).get_workers()
    for name, worker in workers.items():
        assert set(worker.functions) == {spec.name for spec in shop.tasks_for(name)}
        assert worker.concurrency == 3
        crons = {job.function.__qualname__ for job in worker.cron_jobs}
        assert crons == {spec.name for spec in shop.crons_for(name)}
    assert "billing.charge" in workers["billing"].functions


async def test_litestar_saq_workers_run_discovered_tasks(shop, redis_url):
    configs = queue_configs(shop, url=redis_url, separate_process=False)
    plugin = SAQPlugin(config=SAQConfig(queue_configs=configs))
    workers = list(plugin.get_workers().values())
    for worker in workers:
        worker.SIGNALS = []
        await worker.queue.connect()
    tasks = [asyncio.create_task(worker.start()) for worker in workers]
    try:
        async with Jobs(shop, url=redis_url) as jobs:
            view = jobs.with_options(wait_timeout=20)
            assert await view.apply("billing.charge", invoice_id=5, timeout=9) == (
                "charged invoice 5 (gateway timeout 9s)"
            )
            assert await view.apply("accounts.send_welcome_email", user_id=3) == (
                "user3@example.com"
            )  # the accounts startup hook ran (it opens the database the task writes to)
            billing = await jobs.queue("billing")
            assert await billing.job("cron:billing.close_books") is not None
    finally:
        for worker in workers:
            await worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in workers:
            await worker.queue.disconnect()


async def test_litestar_workers_run_command(shop, redis_url, tmp_path):
    """``litestar workers run`` (one process per queue) serves the discovered tasks: the
    command exactly as the example documents it, with the ``litestar`` console script
    (which, unlike ``python -m litestar``, does not put the current directory on sys.path).
    """
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "DOMAINJOBS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    documented = next(
        line.strip()
        for line in (EXAMPLES / "litestar_saq_app.py").read_text().splitlines()
        if line.strip().startswith("litestar ") and "workers run" in line
    )
    command = shlex.split(documented.split("#")[0])
    assert command[0] == "litestar" and shutil.which("litestar", path=env["PATH"])
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=SHOP, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        async with Jobs(shop, url=redis_url) as jobs:
            view = jobs.with_options(wait_timeout=30)
            charged = await view.apply("billing.charge", invoice_id=1)
            welcomed = await view.apply("accounts.send_welcome_email", user_id=2)
        assert charged == "charged invoice 1 (gateway timeout 5s)"
        assert welcomed == "user2@example.com"
    finally:  # the whole group: litestar-saq forks one child per extra queue
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise AssertionError(f"not stopped by SIGTERM:\n{log.read_text()}") from None
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
    assert "Worker starting" in log.read_text()
    with pytest.raises(ProcessLookupError):  # no worker process left behind
        wait_for(lambda: os.killpg(process.pid, 0), timeout=10, what="the workers to exit")


@pytest.mark.filterwarnings("ignore:.*Inferred dependency field:DeprecationWarning")
def test_litestar_saq_web_ui_lists_the_discovered_queues(shop, redis_url):
    from litestar import Litestar
    from litestar.testing import TestClient

    configs = queue_configs(shop, url=redis_url)
    app = Litestar(plugins=[SAQPlugin(config=SAQConfig(queue_configs=configs, web_enabled=True))])
    with TestClient(app) as client:
        queues = client.get("/saq/api/queues").json()["queues"]
        assert client.get("/saq").status_code == 200
    assert {q["name"] for q in queues} == set(shop.queues)
    billing = next(q for q in queues if q["name"] == "billing")
    assert billing["scheduled"] >= 0
