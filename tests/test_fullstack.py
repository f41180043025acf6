"""litestar-fullstack's jobs layout, copied as it is (tests/fixtures/fullstack): every
domain's tasks are found, and its per-job hooks run around every job of a real worker."""

from __future__ import annotations

import json

import redis

from tests.conftest import ROOT, run_cli
from tests.runapps import enqueue

FULLSTACK = ROOT / "tests" / "fixtures" / "fullstack"


def test_check_finds_the_task_a_jobs_package_re_exports_through_all():
    result = run_cli("check", cwd=FULLSTACK)
    assert result.returncode == 0, result.stderr
    assert "2 domain(s), 2 task(s)" in result.stderr, result.stderr
    assert "1 startup and 1 shutdown hook(s), 2 before/after-job hook(s)" in result.stderr
    assert "warning" not in result.stderr


def test_list_shows_the_tasks_and_the_app_wide_job_hooks():
    data = json.loads(run_cli("list", "--json", cwd=FULLSTACK, check=True).stdout)
    domains = {d["name"]: d for d in data["domains"]}
    [task] = domains["accounts"]["tasks"]
    assert task["name"] == "accounts.refresh_oauth_tokens"
    assert task["module"] == "app.domain.accounts.jobs._oauth_refresh"
    system = domains["system"]
    assert [t["name"] for t in system["tasks"]] == ["system.cleanup_auth_tokens"]
    assert [(h["name"], h["all_domains"]) for h in system["before_job"]] == [
        ("system.before_process", True)
    ]
    assert [h["name"] for h in system["after_job"]] == ["system.after_process"]
    human = run_cli("list", cwd=FULLSTACK, check=True).stdout
    assert "  before   system.before_process  (every job)  [app/lib/worker.py:" in human


def test_a_worker_runs_the_apps_hooks_around_every_job(redis_url):
    enqueue(redis_url, "accounts.refresh_oauth_tokens")
    enqueue(redis_url, "system.cleanup_auth_tokens")
    env = {"TEST_REDIS_URL": redis_url, "DOMAINJOBS_URL": redis_url}
    result = run_cli("run", "--burst", cwd=FULLSTACK, env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    client = redis.Redis.from_url(redis_url)
    events = [e.decode() for e in client.lrange("fullstack:events", 0, -1)]
    client.close()
    assert events[0] == "startup" and events[-1] == "shutdown", events
    for task in ("accounts.refresh_oauth_tokens", "system.cleanup_auth_tokens"):
        before, after = events.index(f"before:{task}"), events.index(f"after:{task}:completed")
        assert before < after, events
    assert len(events) == 6, events
