"""``domainjobs run --processes N``: a supervisor of real worker processes, real signals."""

from __future__ import annotations

import os
import re
import signal
import time

import redis

from tests.conftest import run_cli
from tests.runapps import Running, enqueue, job_statuses, work_app
from tests.servers import wait_for

CRON_EVERY_SECOND = """
import os, redis
from domainjobs import cron

@cron("* * * * * *")
def tick(ctx) -> None:
    prefix = __name__.split(".")[0]
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).rpush(
        f"{prefix}:ticks", f"{ctx['job'].scheduled}:{os.getpid()}"
    )
"""


def child_pids(run: Running) -> list[int]:
    return [int(p) for p in re.findall(r"worker process \d+ started \(pid (\d+)\)", run.log)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_killed_with_sigkill_is_replaced_and_its_job_runs_again(make_app, redis_url):
    app = work_app(make_app)
    prefix = app.name
    client = redis.Redis.from_url(redis_url)
    with Running(["--processes", "2", "--grace", "5"], app, redis_url) as run:
        run.wait_log("started (pid", count=2)
        [key] = enqueue(redis_url, "work.once_slow", 1, timeout=3, retries=3)
        first = wait_for(lambda: client.lrange(f"{prefix}:started", 0, -1), what="job started")
        _, pid, attempt = first[0].decode().split(":")
        assert attempt == "1" and int(pid) in child_pids(run)
        os.kill(int(pid), signal.SIGKILL)
        run.wait_log("killed by signal SIGKILL unexpectedly; restarting it")
        run.wait_log("started (pid", count=3)
        # the sweep finds the dead worker's job once its timeout (3 s) has passed
        wait_for(
            lambda: job_statuses(redis_url, [key])[key] == "complete",
            timeout=30,
            what="the killed worker's job to complete elsewhere",
        )
        assert client.lrange(f"{prefix}:done", 0, -1) == [b"0"]
        assert len(child_pids(run)) == 3
        survivors = [p for p in child_pids(run) if p != int(pid)]
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    assert not any(alive(p) for p in survivors)
    assert client.llen(f"{prefix}:shutdown") == 2  # each live child ran its shutdown hooks


def test_sigterm_to_the_supervisor_stops_every_child_gracefully(make_app, redis_url):
    app = work_app(make_app)
    prefix = app.name
    keys = enqueue(redis_url, "work.sleepy", 30, seconds=0.3, timeout=30)
    client = redis.Redis.from_url(redis_url)
    with Running(
        ["--processes", "2", "--concurrency", "4", "--grace", "20"], app, redis_url
    ) as run:
        wait_for(lambda: client.llen(f"{prefix}:done") >= 4, what="some jobs done")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    assert client.llen(f"{prefix}:started") == client.llen(f"{prefix}:done")
    statuses = job_statuses(redis_url, keys)
    assert set(statuses.values()) <= {"complete", "queued"}, statuses
    assert client.llen(f"{prefix}:shutdown") == 2


def test_max_jobs_recycles_a_child_without_dropping_a_job(make_app, redis_url):
    app = work_app(make_app)
    prefix = app.name
    keys = enqueue(redis_url, "work.sleepy", 30, seconds=0.05, timeout=30)
    client = redis.Redis.from_url(redis_url)
    with Running(["--max-jobs", "10", "--concurrency", "3"], app, redis_url) as run:
        wait_for(lambda: client.llen(f"{prefix}:done") == 30, timeout=60, what="all jobs done")
        run.wait_log("(recycled); starting a new one", count=2)
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    assert set(job_statuses(redis_url, keys).values()) == {"complete"}
    assert sorted(int(x) for x in client.lrange(f"{prefix}:done", 0, -1)) == list(range(30))
    assert len(set(child_pids(run))) >= 3


def test_three_processes_fire_a_per_second_cron_exactly_once_per_tick(make_app, redis_url):
    app = make_app({"app/domain/clock/jobs/scheduled.py": CRON_EVERY_SECOND})
    prefix = app.name
    client = redis.Redis.from_url(redis_url)
    with Running(["--processes", "3"], app, redis_url) as run:
        run.wait_log("started (pid", count=3)
        wait_for(lambda: client.llen(f"{prefix}:ticks") >= 12, timeout=40, what="twelve ticks")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.log
    entries = [x.decode().split(":") for x in client.lrange(f"{prefix}:ticks", 0, -1)]
    ticks = [int(scheduled) for scheduled, _ in entries]
    assert len(set(ticks)) == len(ticks), f"a tick fired twice: {ticks}"
    # skip the first tick (processes were still starting) and look at ten after it; ticks
    # run in parallel on three processes, so two may end in either order
    window = sorted(ticks)[1:11]
    assert window == list(range(window[0], window[0] + 10)), f"a tick was missed: {ticks}"
    assert len(child_pids(run)) == 3, "all three processes ran all along"


def test_a_broken_module_fails_once_with_exit_2_before_any_child_starts(make_app, redis_url):
    app = make_app({"app/domain/bad/jobs/tasks.py": "def broken(:\n    pass\n"})
    start = time.monotonic()
    result = run_cli(
        "run",
        "--processes",
        "3",
        "--url",
        redis_url,
        "--roots",
        f"{app.name}.domain",
        "--app-dir",
        str(app.parent),
        cwd=app.parent,
    )
    assert result.returncode == 2, result.stderr
    assert "started (pid" not in result.stderr
    assert result.stderr.count("problem found while discovering") == 1, result.stderr
    assert time.monotonic() - start < 20
