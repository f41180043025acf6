"""One log line per finished job, as text or JSON; a failure's traceback exactly once."""

from __future__ import annotations

import json

from tests.runapps import Running, enqueue, work_app


def run_burst(app, redis_url, *extra: str) -> Running:
    with Running(["--burst", *extra], app, redis_url) as run:
        assert run.wait() == 0, run.log
    return run


def test_text_log_has_one_line_per_job_and_the_traceback_once(make_app, redis_url):
    app = work_app(make_app)
    ok_keys = enqueue(redis_url, "work.noop", 2)
    [bad_key] = enqueue(redis_url, "work.boom", 1, retries=1)
    log = run_burst(app, redis_url).log
    job_lines = [line for line in log.splitlines() if "domainjobs.jobs:" in line]
    assert len(job_lines) == 3, log
    for key in ok_keys:
        [line] = [x for x in job_lines if key in x]
        assert " INFO domainjobs.jobs: job work.noop complete [queue=default domain=work " in line
        assert "attempts=1 wait=" in line and "ms run=" in line
    [line] = [x for x in job_lines if bad_key in x]
    assert "WARNING domainjobs.jobs: job work.boom failed" in line
    assert log.count("RuntimeError: boom from a test job") == 1, log
    # SAQ's own per-job INFO chatter is replaced by our line
    assert "Processing Job<" not in log and "Enqueuing" not in log


def test_json_log_format_is_one_object_per_line(make_app, redis_url):
    app = work_app(make_app)
    [ok_key] = enqueue(redis_url, "work.noop", 1)
    [bad_key] = enqueue(redis_url, "work.boom", 1, retries=2)
    log = run_burst(app, redis_url, "--log-format", "json").log
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    jobs = [r for r in records if r["logger"] == "domainjobs.jobs"]
    by_key = {}
    for record in jobs:
        by_key.setdefault(record["job_key"], []).append(record)
    [done] = by_key[ok_key]
    assert done["status"] == "complete" and done["level"] == "info"
    assert done["task"] == "work.noop" and done["queue"] == "default" and done["domain"] == "work"
    assert done["attempts"] == 1
    assert isinstance(done["wait_ms"], int) and done["wait_ms"] >= 0
    assert isinstance(done["run_ms"], float) and done["run_ms"] >= 0
    assert done["time"].endswith("Z")
    assert [r["status"] for r in by_key[bad_key]] == ["retrying", "failed"]
    assert [r["attempts"] for r in by_key[bad_key]] == [1, 2]
    tracebacks = [r for r in records if "RuntimeError: boom" in r.get("exception", "")]
    assert len(tracebacks) == 2  # one per failed attempt, each logged once
    assert all(r["level"] == "error" for r in tracebacks)


def test_log_level_warning_keeps_only_failures(make_app, redis_url):
    app = work_app(make_app)
    enqueue(redis_url, "work.noop", 3)
    [bad_key] = enqueue(redis_url, "work.boom", 1, retries=1)
    log = run_burst(app, redis_url, "--log-level", "warning").log
    job_lines = [line for line in log.splitlines() if "domainjobs.jobs:" in line]
    assert len(job_lines) == 1 and bad_key in job_lines[0] and " failed " in job_lines[0], log
    assert log.count("RuntimeError: boom from a test job") == 1


def test_run_with_the_web_ui_keeps_every_info_line(make_app, redis_url):
    # uvicorn's logging set-up (dictConfig) closes every handler: ours must keep writing
    import signal
    import socket

    from tests.runapps import job_statuses
    from tests.servers import wait_for

    app = work_app(make_app)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Running(["--web", "--port", str(port)], app, redis_url) as run:
        run.wait_log("web UI on http://127.0.0.1:")
        [key] = enqueue(redis_url, "work.noop", 1)
        wait_for(lambda: job_statuses(redis_url, [key])[key] == "complete", timeout=30)
        run.wait_log(f"job work.noop complete [queue=default domain=work key={key}")
        run.signal(signal.SIGINT)
        assert run.wait() == 0, run.log
    assert "received SIGINT: finishing running jobs" in run.log
    assert "workers stopped (exit status 0)" in run.log
