"""``python -m domainjobs enqueue`` in real subprocesses, against a real Redis server."""

from __future__ import annotations

import json

import pytest
import redis

from tests.conftest import run_cli
from tests.shop_fixtures import SHOP, env, worker  # noqa: F401  (fixtures)


def stored_jobs(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter("saq:job:*"))
    finally:
        client.close()


def test_enqueue_prints_the_key_and_the_job_is_stored(env, redis_url):
    result = run_cli(
        "enqueue", "billing.charge", "--kwargs", '{"invoice_id": 4, "timeout": 9}',
        cwd=SHOP, env=env, check=True,
    )  # fmt: skip
    key = result.stdout.strip()
    assert "billing.charge enqueued on queue 'billing'" in result.stderr
    client = redis.Redis.from_url(redis_url)
    stored = json.loads(client.get(f"saq:job:billing:{key}"))
    client.close()
    assert stored["kwargs"] == {"invoice_id": 4, "timeout": 9}  # timeout is the task's own
    assert stored["timeout"] == 30  # the billing domain's job default
    assert stored["retries"] == 3


def test_enqueue_wait_prints_the_result_as_json(env, worker):
    result = run_cli(
        "enqueue", "billing.create_invoice", "--kwargs", '{"order_id": 1, "amount_cents": 9}',
        "--wait", "--timeout", "30", cwd=SHOP, env=env, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == {"order_id": 1, "amount_cents": 9, "status": "open"}


def test_job_options_are_flags_and_a_duplicate_key_is_not_enqueued_twice(env, redis_url):
    args = ("enqueue", "catalog.price_of", "--kwargs", '{"sku": "tea"}', "--key", "tea-1")
    first = run_cli(*args, "--job-timeout", "12", "--delay", "600", cwd=SHOP, env=env, check=True)
    second = run_cli(*args, cwd=SHOP, env=env, check=True)
    assert first.stdout == second.stdout == "tea-1\n"
    assert "already queued (same key)" in second.stderr
    client = redis.Redis.from_url(redis_url)
    stored = json.loads(client.get("saq:job:default:tea-1"))
    client.close()
    assert stored["timeout"] == 12 and stored["scheduled"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["billing.chrage"], "unknown task 'billing.chrage'; did you mean 'billing.charge'"),
        (["billing.charge", "--kwargs", '{"invoice": 1}'], "did you mean 'invoice_id'"),
        (["billing.charge"], "missing required argument(s) 'invoice_id'"),
        (["billing.charge", "--kwargs", "{oops"], "--kwargs is not valid JSON"),
        (["billing.charge", "--kwargs", "[1]"], "--kwargs must be a JSON object"),
        (["billing.charge", "--kwargs", '{"invoice_id": 1}', "--retries", "-1"], "retries"),
    ],
)
def test_bad_input_exits_2_with_one_sentence_and_enqueues_nothing(env, redis_url, args, message):
    result = run_cli("enqueue", *args, cwd=SHOP, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert stored_jobs(redis_url) == []


def test_a_failed_job_or_a_timeout_exits_1(env, redis_url):
    timed_out = run_cli(
        "enqueue", "billing.send_reminders", "--wait", "--timeout", "0.5", cwd=SHOP, env=env
    )
    assert timed_out.returncode == 1
    assert "did not finish within 0.5s (the job goes on" in timed_out.stderr
    down = run_cli(
        "enqueue", "billing.send_reminders", cwd=SHOP,
        env={**env, "DOMAINJOBS_URL": "redis://127.0.0.1:1/0"},
    )  # fmt: skip
    assert down.returncode == 1
    assert "broker redis://127.0.0.1:1/0 is unreachable" in down.stderr
    assert "Traceback" not in down.stderr
