"""The example apps (FastAPI, Litestar, Starlette) served by real uvicorn processes, with
real workers (``python -m domainjobs run``, or in-process): HTTP in, job done, result out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import EXAMPLES
from tests.servers import free_port, wait_for

SHOP = EXAMPLES / "shop"
FRAMEWORKS = ["fastapi_app", "litestar_app", "starlette_app"]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, *args], cwd=SHOP, env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def stop(process: subprocess.Popen[bytes], log: Path) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise AssertionError(f"did not stop on SIGTERM:\n{log.read_text()}") from None


class Served:
    def __init__(self, base: str, web: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.web, self.log = base, web, log

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10)

    def post(self, path: str, body: object) -> httpx.Response:
        return httpx.post(self.base + path, json=body, timeout=10)

    def finished_job(self, key: str) -> dict[str, object]:
        def done() -> dict[str, object] | None:
            data = self.get(f"/jobs/{key}").json()
            return data if data["status"] in ("complete", "failed", "aborted") else None

        return wait_for(done, timeout=30, interval=0.05, what=f"job {key} to finish")


@pytest.fixture
def serve(redis_url: str, tmp_path: Path) -> Iterator[object]:
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(module: str, in_process: bool) -> Served:
        env = {
            **os.environ,
            "DOMAINJOBS_URL": redis_url,
            "SHOP_ACCOUNTS_DB": str(tmp_path / "accounts.sqlite3"),
            "SHOP_IN_PROCESS_WORKERS": "1" if in_process else "0",
        }
        if not in_process:
            log = tmp_path / "worker.log"
            processes.append((start(["-m", "domainjobs", "run"], env, log), log))
        port = free_port()
        log = tmp_path / f"{module}.log"
        web = start(
            ["-m", "uvicorn", "--app-dir", "..", f"{module}:app", "--port", str(port)], env, log
        )
        processes.append((web, log))
        served = Served(f"http://127.0.0.1:{port}", web, log)

        def ready() -> bool:
            if web.poll() is not None:
                raise AssertionError(f"uvicorn exited {web.returncode}:\n{log.read_text()}")
            try:
                return served.get("/jobs/none").status_code == 404
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, what=f"uvicorn serving {module}")
        return served

    yield run
    codes = [(stop(process, log), log) for process, log in reversed(processes)]
    for code, log in codes:
        text = log.read_text()
        assert "Traceback" not in text, text
        if log.name == "worker.log":
            assert code == 0, f"the worker exited {code}:\n{text}"
        else:  # uvicorn shuts down gracefully, then re-raises the signal it got
            assert code in (0, -signal.SIGTERM, -signal.SIGINT), f"{log.name}: {code}\n{text}"
            assert "Application shutdown complete" in text, text


@pytest.mark.parametrize("in_process", [False, True], ids=["worker-process", "in-process"])
@pytest.mark.parametrize("module", FRAMEWORKS)
def test_enqueue_over_http_and_serve_the_result(serve, module, in_process):
    served = serve(module, in_process)
    response = served.post("/invoices", {"order_id": 7, "amount_cents": 1250})
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["task"] == "billing.create_invoice"
    assert created["queue"] == "billing" and created["status"] == "queued"
    job = served.finished_job(created["key"])
    assert job["status"] == "complete", job
    assert job["result"] == {"order_id": 7, "amount_cents": 1250, "status": "open"}
    assert served.get("/jobs/no-such-key").status_code == 404


def test_in_process_workers_stop_with_the_server(serve, tmp_path):
    served = serve("starlette_app", True)
    key = served.post("/invoices", {"order_id": 1, "amount_cents": 1}).json()["key"]
    assert served.finished_job(key)["status"] == "complete"
    served.web.send_signal(signal.SIGINT)
    assert served.web.wait(30) in (0, -signal.SIGINT)
    text = served.log.read_text()
    assert "Application shutdown complete" in text, text
    assert "in-process workers stopped with status" not in text, text


def test_fastapi_rejects_bad_arguments_with_one_sentence(serve):
    served = serve("fastapi_app", False)
    bad = served.post("/tasks/billing.charge", {"invoice": 1})
    assert bad.status_code == 422
    assert "unexpected argument(s) 'invoice'; did you mean 'invoice_id'" in bad.json()["detail"]
    unknown = served.post("/tasks/billing.chrage", {})
    assert "did you mean 'billing.charge'" in unknown.json()["detail"]
    charged = served.post("/invoices/9/charge?timeout=30", {})
    assert charged.json() == {"result": "charged invoice 9 (gateway timeout 30s)"}


async def test_in_process_workers_that_fail_to_start_say_so(make_app, redis_url, caplog):
    import asyncio

    from domainjobs import discover
    from domainjobs.lifespan import in_process_workers

    base = make_app(
        {
            "app/domain/broken/jobs/tasks.py": "async def noop(ctx):\n    return None\n",
            "app/domain/broken/jobs/startup.py": (
                "def open_db(ctx):\n    raise RuntimeError('database is down')\n"
            ),
        }
    )
    registry = discover(f"{base.name}.domain")
    with caplog.at_level("ERROR", logger="domainjobs"):
        async with in_process_workers(registry, url=redis_url):
            for _ in range(500):  # up to ~10 s
                if "stopped on their own" in caplog.text:
                    break
                await asyncio.sleep(0.02)
    assert "the in-process workers stopped on their own (status 1)" in caplog.text
