"""A real Prometheus server (Debian's ``prometheus`` package) scrapes a real shop worker
(``python -m domainjobs run --metrics-port``, one process and ``--processes 2``) every
second, and its HTTP API returns our series with the right labels and counts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("prometheus_client")

import domainjobs
from tests.conftest import EXAMPLES
from tests.servers import free_port, wait_for

SHOP = EXAMPLES / "shop"
DOCS = Path(__file__).resolve().parent.parent / "docs"
ALERTS = DOCS / "prometheus" / "domainjobs-alerts.yml"
DASHBOARD = DOCS / "grafana" / "domainjobs.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(
    not os.path.exists(PROMETHEUS) and not os.environ.get("CI"),
    reason="Debian's prometheus package is not installed (apt-get install prometheus)",
)

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: domainjobs
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@contextmanager
def prometheus(target_port: int, folder: Path) -> Iterator[str]:
    """A Prometheus server scraping ``127.0.0.1:target_port``; yields its base URL."""
    config = folder / "prometheus.yml"
    config.write_text(CONFIG.format(port=target_port, rules=ALERTS))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=60, interval=0.2, what="prometheus to be ready")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def query(base: str, promql: str) -> list[dict]:
    """The result vector of an instant query."""
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def by_labels(result: list[dict], *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(n, "") for n in names): float(r["value"][1]) for r in result}


async def enqueue_shop_jobs(url: str) -> None:
    async with domainjobs.Jobs("app.domain", url=url) as jobs:
        for invoice in range(3):
            await jobs.enqueue("billing.charge", invoice_id=invoice)
        for _ in range(2):
            await jobs.enqueue("catalog.price_of", sku="no-such-sku")  # KeyError: failed
        await jobs.enqueue("accounts.send_welcome_email", user_id=1)


def check_docs_queries(base: str) -> None:
    """The documented alert rules load and evaluate cleanly, and every query of the Grafana
    dashboard runs against our series and returns data."""

    def rules() -> list[dict] | None:
        response = httpx.get(f"{base}/api/v1/rules", timeout=10).json()
        found = [r for g in response["data"]["groups"] for r in g["rules"]]
        return found if found and all(r.get("lastEvaluation", "").startswith("2") and
                                      r["health"] == "ok" for r in found) else None  # fmt: skip

    evaluated = wait_for(rules, timeout=30, interval=0.5, what="the alert rules evaluated")
    assert {r["name"] for r in evaluated} >= {
        "DomainjobsHighFailureRate",
        "DomainjobsQueueWaitHigh",
        "DomainjobsNoLiveWorker",
        "DomainjobsBrokerDown",
    }
    firing = {r["name"] for r in evaluated if r["state"] != "inactive"}
    assert not firing & {"DomainjobsNoLiveWorker", "DomainjobsBrokerDown"}, firing
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            promql = (
                target["expr"]
                .replace("$queue", ".*")
                .replace("$domain", ".*")
                .replace("$__rate_interval", "1m")
            )
            response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
            assert response.status_code == 200, (panel["title"], promql, response.text)
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("domainjobs_queue_workers" in q for q in queries)


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "processes-2"])
def test_prometheus_scrapes_job_and_queue_series_by_task_domain_queue_status(
    processes, redis_url, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(SHOP))
    monkeypatch.chdir(SHOP)
    metrics_port = free_port()
    env = {
        **os.environ,
        "DOMAINJOBS_URL": redis_url,
        "SHOP_ACCOUNTS_DB": str(tmp_path / "accounts.sqlite3"),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "domainjobs", "run", "--processes", str(processes),
             "--metrics-port", str(metrics_port)],
            cwd=SHOP, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "metrics on http://" in log.read_text(), timeout=30, what="metrics port")
        asyncio.run(enqueue_shop_jobs(redis_url))
        with prometheus(metrics_port, tmp_path) as base:

            def counted() -> dict[tuple[str, ...], float] | None:
                found = by_labels(
                    query(base, "domainjobs_jobs_finished_total"),
                    "task",
                    "domain",
                    "queue",
                    "status",
                )
                done = found.get(("billing.charge", "billing", "billing", "complete")) == 3
                failed = found.get(("catalog.price_of", "catalog", "default", "failed")) == 2
                return found if done and failed else None

            finished = wait_for(counted, timeout=60, interval=0.5, what="prometheus to see jobs")
            assert finished[("accounts.send_welcome_email", "accounts", "default", "complete")] == 1
            [up] = query(base, 'up{job="domainjobs"}')
            assert up["value"][1] == "1"
            assert up["metric"]["instance"] == f"127.0.0.1:{metrics_port}"

            runs = by_labels(
                query(base, "domainjobs_job_run_seconds_count"), "task", "domain", "queue"
            )
            assert runs[("billing.charge", "billing", "billing")] == 3
            promql = 'histogram_quantile(0.5, sum by (le) (domainjobs_job_wait_seconds_bucket{task="billing.charge"}))'
            [median] = query(base, promql)  # the buckets are usable by PromQL
            assert 0 <= float(median["value"][1]) < 60
            queued = wait_for(
                lambda: (
                    (found := by_labels(query(base, "domainjobs_queue_jobs"), "queue", "status"))
                    and found.get(("default", "failed")) == 2
                    and found
                ),
                timeout=30,
                interval=0.5,
                what="the stored failed jobs in a scrape",
            )
            assert {q for q, _ in queued} == {"billing", "default"}
            assert {s for _, s in queued} == {"queued", "active", "scheduled", "failed"}
            assert queued[("default", "failed")] == 2  # the stored failed jobs
            workers = by_labels(query(base, "domainjobs_queue_workers"), "queue")
            assert workers == {("billing",): processes, ("default",): processes}
            assert by_labels(query(base, "domainjobs_queue_up"), "queue") == {
                ("billing",): 1,
                ("default",): 1,
            }
            check_docs_queries(base)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    text = log.read_text()
    assert code == 0, text
    assert "the scrape failed" not in text, text
