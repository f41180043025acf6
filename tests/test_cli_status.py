"""``python -m domainjobs status`` in real subprocesses, against a real Redis server."""

from __future__ import annotations

import json

from domainjobs.cli.status import render
from domainjobs.client.status import QueueStatus, WorkerStatus
from tests.conftest import run_cli
from tests.servers import wait_for
from tests.shop_fixtures import SHOP, env, worker  # noqa: F401  (fixtures)


def status_json(env: dict[str, str], *args: str) -> dict:
    result = run_cli("status", "--json", *args, cwd=SHOP, env=env, check=True)
    return json.loads(result.stdout)


def test_counts_per_queue_as_json(env):
    for sku in ("tea", "cake"):
        run_cli("enqueue", "catalog.price_of", "--kwargs", json.dumps({"sku": sku}),
                cwd=SHOP, env=env, check=True)  # fmt: skip
    run_cli("enqueue", "billing.send_reminders", "--delay", "600", cwd=SHOP, env=env, check=True)
    data = status_json(env)
    queues = {q["name"]: q for q in data["queues"]}
    assert set(queues) == {"billing", "default"}
    assert (queues["default"]["queued"], queues["default"]["scheduled"]) == (2, 0)
    assert (queues["billing"]["queued"], queues["billing"]["scheduled"]) == (0, 1)
    assert queues["default"]["workers"] == [] and queues["default"]["failed"] == 0
    only = status_json(env, "-q", "billing")
    assert [q["name"] for q in only["queues"]] == ["billing"]


def test_live_workers_and_failed_jobs(env, worker):
    def reported() -> dict | None:
        data = status_json(env)
        return data if all(q["workers"] for q in data["queues"]) else None

    data = wait_for(reported, timeout=30, what="both queues' workers to report")
    assert {q["name"] for q in data["queues"]} == {"billing", "default"}
    failed = run_cli(
        "enqueue", "catalog.price_of", "--kwargs", '{"sku": "nope"}', "--wait", "--timeout", "30",
        cwd=SHOP, env=env,
    )  # fmt: skip
    assert failed.returncode == 1 and "KeyError" in failed.stderr
    queues = {q["name"]: q for q in status_json(env)["queues"]}
    assert queues["default"]["failed"] == 1
    human = run_cli("status", cwd=SHOP, env=env, check=True).stdout
    assert "default worker" in human and "billing worker" in human


def test_human_table_and_errors(env):
    human = run_cli("status", cwd=SHOP, env=env, check=True).stdout
    assert human.splitlines()[1].split() == ["queue", "queued", "active", "scheduled", "failed",
                                             "workers"]  # fmt: skip
    assert "no live workers" in human
    bad = run_cli("status", "-q", "biling", cwd=SHOP, env=env)
    assert bad.returncode == 2 and "did you mean 'billing'" in bad.stderr
    down = run_cli(
        "status", cwd=SHOP, env={**env, "DOMAINJOBS_URL": "redis://u:s3cret@127.0.0.1:1"}
    )
    assert down.returncode == 1 and "unreachable" in down.stderr
    assert "s3cret" not in down.stderr


def test_render_is_reusable():
    statuses = [
        QueueStatus("mail", 3, 1, 0, 2, (WorkerStatus("w1", {"uptime": 5000, "complete": 4}),)),
    ]
    text = render(statuses, "redis://:pw@host:6379")
    assert "redis://:***@host:6379" in text
    assert text.splitlines()[2].split() == ["mail", "3", "1", "0", "2", "1"]
    assert "mail worker w1: up 5s, 4 complete" in text
