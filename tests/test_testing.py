"""domainjobs.testing used as a library (the unittest way): TaskRunner, JobsHarness, the
job log, and the throwaway broker, against real Redis-protocol servers."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path

import pytest
import redis

from domainjobs import Registry, TaskArgumentsError, UnknownTaskError, discover
from domainjobs.errors import ConfigError
from domainjobs.testing import (
    BrokerUnavailableError,
    DrainTimeoutError,
    HookError,
    JobsFailedError,
    JobsHarness,
    TaskRunner,
    UnserializableResultError,
    WorkersStoppedError,
    throwaway_broker,
    throwaway_server,
)

HOOKS_A = """
from app.domain.alpha import EVENTS

def open_a(ctx):
    EVENTS.append("startup alpha")
    ctx["alpha"] = "A"
"""
SHUTDOWN_A = """
from app.domain.alpha import EVENTS

def close_a(ctx):
    EVENTS.append("shutdown alpha saw " + ctx["beta"])
"""
HOOKS_B = """
from app.domain.alpha import EVENTS

async def open_b(ctx):
    EVENTS.append("startup beta saw " + ctx["alpha"])
    ctx["beta"] = "B"
"""
SHUTDOWN_B = """
from app.domain.alpha import EVENTS

async def close_b(ctx):
    EVENTS.append("shutdown beta")
"""
TASKS_A = """
import asyncio
import threading
from domainjobs import task

@task
async def describe(ctx, n: int, items: tuple = ()) -> dict:
    job = ctx["job"]
    return {
        "keys": sorted(ctx),
        "alpha": ctx["alpha"],
        "beta": ctx["beta"],
        "queue": ctx["worker"].queue.name,
        "function": job.function,
        "kwargs": job.kwargs,
        "status": str(job.status.value),
        "attempts": job.attempts,
        "timeout": job.timeout,
        "items": items,
        "n": n,
    }

@task(queue="slow", timeout=1)
async def sleepy(ctx, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"

@task
async def boom(ctx, message: str) -> None:
    raise ValueError(message)

@task
def in_thread(ctx) -> bool:
    return threading.current_thread() is not threading.main_thread()

@task
async def returns_object(ctx) -> object:
    return object()

@task
async def uses_broker(ctx) -> int:
    return await ctx["worker"].queue.count("queued")
"""

CHAIN = """
import os
from domainjobs import Jobs, on_shutdown, on_startup, task

@on_startup
async def open_jobs(ctx):
    ctx["jobs"] = Jobs("app.domain", url=os.environ["CHAIN_URL"])
    await ctx["jobs"].open()

@on_shutdown
async def close_jobs(ctx):
    await ctx["jobs"].close()

@task
async def first(ctx, n: int) -> str:
    await ctx["jobs"].enqueue(second, n=n + 1)
    return f"first {n}"

@task(queue="other")
async def second(ctx, n: int) -> str:
    await ctx["jobs"].with_options(timeout=33).enqueue(third, n=n + 1)
    return f"second {n}"

@task
async def third(ctx, n: int) -> str:
    return f"third {n}"

@task
async def fails(ctx, why: str) -> None:
    raise ValueError(why)

@task(retries=3)
async def flaky(ctx) -> None:
    raise RuntimeError(f"attempt {ctx['job'].attempts}")

@task(queue="other", timeout=30)
async def slow(ctx, seconds: float) -> str:
    import asyncio
    await asyncio.sleep(seconds)
    return "slow done"
"""


@pytest.fixture
def hooked(make_app) -> tuple[Registry, list[str]]:
    base = make_app(
        {
            "app/domain/alpha/__init__.py": "EVENTS = []\n",
            "app/domain/alpha/jobs/startup.py": HOOKS_A,
            "app/domain/alpha/jobs/shutdown.py": SHUTDOWN_A,
            "app/domain/alpha/jobs/tasks.py": TASKS_A,
            "app/domain/beta/jobs/startup.py": HOOKS_B,
            "app/domain/beta/jobs/shutdown.py": SHUTDOWN_B,
        }
    )
    events = importlib.import_module(f"{base.name}.domain.alpha").EVENTS
    return discover(f"{base.name}.domain"), events


@pytest.fixture
def chain(make_app, redis_url, monkeypatch) -> Registry:
    monkeypatch.setenv("CHAIN_URL", redis_url)
    base = make_app({"app/domain/chain/jobs.py": CHAIN})
    return discover(f"{base.name}.domain")


# -- TaskRunner ----------------------------------------------------------------------------


async def test_runner_builds_the_worker_context_and_runs_hooks_once(hooked):
    registry, events = hooked
    async with TaskRunner(registry) as runner:
        assert events == ["startup alpha", "startup beta saw A"]
        first = await runner.run("alpha.describe", 3, items=(1, 2))
        again = await runner.run(registry.tasks["alpha.describe"].function, n=4)
        assert events == ["startup alpha", "startup beta saw A"]  # once, not per call
    assert events[2:] == ["shutdown beta", "shutdown alpha saw B"]  # reverse order
    assert first["keys"] == ["alpha", "beta", "job", "worker"]
    assert (first["alpha"], first["beta"], first["queue"]) == ("A", "B", "default")
    assert first["function"] == "alpha.describe"
    assert first["kwargs"] == {"n": 3, "items": [1, 2]}
    assert (first["status"], first["attempts"], first["timeout"]) == ("active", 1, 10)
    assert first["items"] == [1, 2]  # as the broker delivers it: JSON has no tuples
    assert again["n"] == 4


async def test_runner_passes_exceptions_and_enforces_the_timeout(hooked):
    registry, _ = hooked
    async with TaskRunner(registry) as runner:
        with pytest.raises(ValueError, match=r"^kaput$"):
            await runner.run("alpha.boom", message="kaput")
        with pytest.raises(asyncio.TimeoutError):
            await runner.run("alpha.sleepy", seconds=5)  # its timeout is 1 s
        assert await runner.run("alpha.sleepy", seconds=0) == "slept"
        assert await runner.run("alpha.in_thread") is True


async def test_runner_checks_arguments_and_results_like_the_broker(hooked):
    registry, _ = hooked
    async with TaskRunner(registry) as runner:
        with pytest.raises(TaskArgumentsError, match=r"missing required argument.*'n'"):
            await runner.run("alpha.describe")
        with pytest.raises(UnknownTaskError, match=r"did you mean 'alpha\.describe'"):
            await runner.run("alpha.describ", n=1)
        with pytest.raises(UnserializableResultError, match="returned object value"):
            await runner.run("alpha.returns_object")


async def test_runner_without_broker_says_so(hooked):
    registry, _ = hooked
    async with TaskRunner(registry) as runner:
        with pytest.raises(Exception, match="the TaskRunner has no broker: pass"):
            await runner.run("alpha.uses_broker")


async def test_runner_with_broker(hooked, redis_url):
    registry, _ = hooked
    redis.Redis.from_url(redis_url).rpush("saq:default:queued", "x")
    async with TaskRunner(registry, url=redis_url) as runner:
        assert await runner.run("alpha.uses_broker") == 1


async def test_runner_failing_hooks(make_app):
    base = make_app(
        {
            "app/domain/bad/jobs/startup.py": "def open_it(ctx):\n    raise OSError('no disk')\n",
            "app/domain/bad/jobs/shutdown.py": "def close_it(ctx):\n    raise RuntimeError('stuck')\n",
            "app/domain/bad/jobs/tasks.py": "async def noop(ctx):\n    return None\n",
        }
    )
    registry = discover(f"{base.name}.domain")
    with pytest.raises(OSError, match="no disk"):
        async with TaskRunner(registry):
            pass
    runner = TaskRunner(registry.__class__(tasks=registry.tasks, shutdown=registry.shutdown))
    await runner.start()
    assert await runner.run("bad.noop") is None
    with pytest.raises(HookError, match=r"shutdown hook\(s\) .*close_it raised"):
        await runner.close()


# -- JobsHarness ---------------------------------------------------------------------------


async def test_drain_runs_jobs_enqueued_by_jobs_across_queues(chain, redis_url):
    async with JobsHarness(chain, url=redis_url) as harness:
        handle = await harness.jobs.enqueue("chain.first", n=1)
        log = await harness.drain()
        assert handle.queue == "default"
        assert log.tasks() == ["chain.first", "chain.second", "chain.third"]
        assert log.result("chain.first") == "first 1"
        assert log.result("chain.second", {"n": 2}) == "second 2"
        assert log.result("chain.third") == "third 3"
        assert log.one("chain.third").options["timeout"] == 33
        assert [job.queue for job in log] == ["default", "other", "default"]
        assert not log.pending and not log.failed
        # the workers keep running: apply works without a drain
        assert await harness.jobs.apply("chain.third", n=9) == "third 9"


async def test_drain_reports_failed_jobs_readably_once(chain, redis_url):
    async with JobsHarness(chain, url=redis_url) as harness:
        await harness.jobs.enqueue("chain.fails", why="card declined")
        await harness.jobs.enqueue("chain.third", n=1)
        with pytest.raises(JobsFailedError) as caught:
            await harness.drain()
        text = str(caught.value)
        assert text.startswith("1 job(s) failed while draining:")
        assert "chain.fails(why='card declined') on queue 'default': failed" in text
        assert "ValueError: card declined" in text
        assert "raise ValueError(why)" in text  # the job's traceback
        assert [job.task for job in caught.value.jobs] == ["chain.fails"]
        log = await harness.drain()  # reported once
        assert log.failed.tasks() == ["chain.fails"]
        assert log.result("chain.third") == "third 1"
        with pytest.raises(AssertionError, match="to be complete, but it is failed"):
            log.result("chain.fails")


async def test_drain_waits_for_every_retry(chain, redis_url):
    async with JobsHarness(chain, url=redis_url) as harness:
        await harness.jobs.enqueue("chain.flaky")
        with pytest.raises(
            JobsFailedError, match=r"failed after 3 attempt\(s\) - RuntimeError: attempt 3"
        ):
            await harness.drain()


async def test_drain_times_out_listing_pending_jobs(chain, redis_url):
    async with JobsHarness(chain, url=redis_url) as harness:
        await harness.jobs.enqueue("chain.slow", seconds=1.0)
        with pytest.raises(DrainTimeoutError) as caught:
            await harness.drain(timeout=0.2)
        assert "drain gave up after 0.2s with 1 job(s) pending" in str(caught.value)
        assert "chain.slow(seconds=1.0) on queue 'other'" in str(caught.value)
        log = await harness.drain()
        assert log.result("chain.slow") == "slow done"


async def test_without_workers_jobs_run_only_inside_drain(chain, redis_url):
    async with JobsHarness(chain, url=redis_url, workers=False) as harness:
        assert not harness.workers_running
        await harness.jobs.with_options(key="order-7", timeout=20).enqueue("chain.third", n=7)
        await harness.jobs.enqueue("chain.second", n=1)
        log = await harness.enqueued()
        assert [job.status for job in log] == ["queued", "queued"]
        log.assert_enqueued("chain.third", {"n": 7}, options={"key": "order-7", "timeout": 20})
        log.assert_enqueued("chain.second", times=1)
        log.assert_not_enqueued("chain.first")
        drained = await harness.drain()
        assert not harness.workers_running
        assert drained.results("chain.third") == ["third 7", "third 2"]


async def test_enqueue_assertion_failures_list_what_the_broker_holds(chain, redis_url):
    async with JobsHarness(chain, url=redis_url, workers=False) as harness:
        await harness.jobs.enqueue("chain.third", n=1)
        with pytest.raises(AssertionError) as caught:
            await harness.enqueued.assert_enqueued("chain.third", {"n": 2})
        assert str(caught.value) == (
            "expected at least one job of task 'chain.third' with kwargs {'n': 2}, found 0; "
            "the broker holds 1 job(s):\n"
            "  1. chain.third(n=1) on queue 'default': queued"
        )
        with pytest.raises(AssertionError, match=r"expected no job of task 'chain\.third'"):
            await harness.enqueued.assert_not_enqueued("chain.third")
        with pytest.raises(AssertionError, match=r"expected 2 job\(s\) of task 'chain.third'"):
            await harness.enqueued.assert_enqueued("chain.third", times=2)
        with pytest.raises(UnknownTaskError):  # a typo cannot make an assertion pass
            await harness.enqueued.assert_not_enqueued("chain.thrid")


async def test_scheduled_jobs_wait_for_scheduled_true(chain, redis_url):
    async with JobsHarness(chain, url=redis_url) as harness:
        await harness.jobs.with_options(delay=2.5).enqueue("chain.third", n=5)  # due in 1.5-2.5 s
        log = await harness.drain()
        assert [job.status for job in log] == ["queued"]
        log = await harness.drain(scheduled=True, timeout=15)
        assert log.result("chain.third") == "third 5"


async def test_a_failing_startup_hook_stops_the_harness_with_its_error(make_app, redis_url):
    base = make_app(
        {
            "app/domain/bad/jobs/startup.py": "def open_it(ctx):\n    raise OSError('no disk')\n",
            "app/domain/bad/jobs/tasks.py": "async def noop(ctx):\n    return None\n",
        }
    )
    with pytest.raises(WorkersStoppedError, match=r"could not start: .*no disk"):
        async with JobsHarness(f"{base.name}.domain", url=redis_url):
            pass


async def test_harness_starts_and_stops_its_own_broker(chain, monkeypatch):
    monkeypatch.delenv("DOMAINJOBS_TEST_URL", raising=False)
    async with JobsHarness(chain) as harness:
        assert harness.url is not None and harness.url.startswith("unix://")
        socket_path = Path(harness.url[len("unix://") :])
        assert socket_path.exists()
        assert await harness.jobs.apply("chain.third", n=1) == "third 1"
    assert not socket_path.exists()


# -- the broker ----------------------------------------------------------------------------


def test_throwaway_server_is_fresh_and_removed():
    with throwaway_server() as url:
        client = redis.Redis.from_url(url)
        assert client.dbsize() == 0
        client.set("k", "v")
        folder = Path(url[len("unix://") :]).parent
        client.close()
    assert not folder.exists()
    with throwaway_server() as other:
        assert redis.Redis.from_url(other).dbsize() == 0


def test_throwaway_broker_uses_the_test_url(monkeypatch, redis_url):
    monkeypatch.setenv("DOMAINJOBS_TEST_URL", redis_url)
    with throwaway_broker() as url:
        assert url == redis_url
    monkeypatch.setenv("DOMAINJOBS_TEST_URL", "postgresql://u:secret@db/x")
    with (
        pytest.raises(ConfigError, match=r"'postgresql://u:\*\*\*@db/x' is not a Redis") as e,
        throwaway_broker(),
    ):
        pass
    assert "secret" not in str(e.value)


def test_missing_server_binary_is_one_clear_sentence(tmp_path):
    with (
        pytest.raises(BrokerUnavailableError, match="cannot start the test broker"),
        throwaway_server(str(tmp_path / "no-such-server")),
    ):
        pass


# -- the pytest fixtures, used by this very module (importing domainjobs.testing opted in) --


@pytest.fixture
def domainjobs_registry(chain) -> Registry:
    """Overrides the plugin's registry: these tests use the chain domain."""
    return chain


@pytest.fixture(scope="session")
def domainjobs_broker_url(redis_base_url) -> str:
    """Overrides the plugin's broker: the suite's own server."""
    return redis_base_url


async def test_fixtures_drain_and_record(jobs, drain, enqueued, domainjobs_url):
    assert os.environ["DOMAINJOBS_URL"] == domainjobs_url
    await jobs.enqueue("chain.first", n=10)
    log = await drain()
    assert log.results("chain.third") == ["third 12"]
    await enqueued.assert_enqueued("chain.second", {"n": 11}, times=1)
    assert (await enqueued("chain.first")).tasks() == ["chain.first"]


async def test_run_task_fixture_has_the_test_broker(run_task, domainjobs_url):
    assert await run_task("chain.first", n=1) == "first 1"  # its startup hook opened Jobs
    queued = redis.Redis.from_url(domainjobs_url).llen("saq:other:queued")
    assert queued == 1  # the job it enqueued is on the test broker


@pytest.mark.domainjobs(workers=False, concurrency=2)
async def test_marker_configures_the_workers(jobs_harness):
    assert not jobs_harness.workers_running
    assert jobs_harness.concurrency == 2
