"""``domainjobs run --reload``: a changed Python file under the app dir restarts the worker,
which then serves what the new code defines."""

from __future__ import annotations

import signal

import pytest
import redis

from tests.runapps import Running, enqueue, job_statuses, work_app
from tests.servers import wait_for

pytest.importorskip("watchfiles")

NEW_TASK = """

async def added_later(ctx) -> str:
    return "new code"
"""


def test_reload_restarts_the_worker_when_a_python_file_changes(make_app, redis_url):
    app = work_app(make_app)
    tasks = app / "domain" / "work" / "jobs" / "tasks.py"
    with Running(["--reload"], app, redis_url) as run:
        run.wait_log("serving queue(s) default")
        (app / "notes.txt").write_text("not Python: no restart")
        tasks.write_text(tasks.read_text() + NEW_TASK)
        run.wait_log("tasks.py changed: restarting 1 worker process(es)")
        run.wait_log("serving queue(s) default", count=2)
        assert "5 task(s) in 1 domain(s)" in run.log.split("changed: restarting")[-1]
        [key] = enqueue(redis_url, "work.added_later", 1)
        wait_for(lambda: job_statuses(redis_url, [key])[key] == "complete", what="the new task ran")
        assert "notes.txt" not in run.log
        run.signal(signal.SIGINT)
        assert run.wait() == 0, run.log
    assert redis.Redis.from_url(redis_url).llen(f"{app.name}:shutdown") == 2


def test_reload_waits_for_a_fix_after_a_broken_edit(make_app, redis_url):
    app = work_app(make_app)
    tasks = app / "domain" / "work" / "jobs" / "tasks.py"
    good = tasks.read_text()
    with Running(["--reload"], app, redis_url) as run:
        run.wait_log("serving queue(s) default")
        tasks.write_text(good + "\ndef broken(:\n")
        run.wait_log("syntax error")
        run.wait_log("exited with status 2 unexpectedly")
        tasks.write_text(good + NEW_TASK)
        run.wait_log("5 task(s) in 1 domain(s)")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
