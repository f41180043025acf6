"""The Jobs facade against a real Redis server, with real SAQ workers in the same loop."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from types import ModuleType

import pytest
import redis
import redis.asyncio

from domainjobs import (
    DuplicateKeyError,
    JobFailedError,
    JobOptionsError,
    Jobs,
    JobTimeoutError,
    Registry,
    TaskArgumentsError,
    UnknownTaskError,
    UnserializableArgumentsError,
    discover,
)
from domainjobs.lifespan import in_process_workers

TASKS = '''
import asyncio
from domainjobs import task

RUNS = []

@task(timeout=42, retries=2)
async def add(ctx, a: int, b: int = 0) -> int:
    RUNS.append(("add", a, b))
    return a + b

@task
async def options_echo(ctx, timeout: int, key: str, retries: int = 0) -> dict:
    """Parameters named like SAQ job fields are the task's own."""
    return {"timeout": timeout, "key": key, "retries": retries, "job_timeout": ctx["job"].timeout}

@task
async def boom(ctx, message: str) -> None:
    raise ValueError(message)

@task
def plain(ctx, text: str) -> str:
    return text.upper()

@task
async def noop(ctx) -> None:
    return None

@task
async def sleepy(ctx, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"
'''

OTHER = """
from domainjobs import task

@task(queue="mail")
async def send(ctx, to: str) -> str:
    return "sent to " + to
"""


@pytest.fixture
def calc(make_app) -> tuple[Registry, ModuleType]:
    base: Path = make_app(
        {
            "app/domain/calc/jobs/tasks.py": TASKS,
            "app/domain/mail/jobs/tasks.py": OTHER,
        }
    )
    registry = discover(f"{base.name}.domain")
    module = importlib.import_module(f"{base.name}.domain.calc.jobs.tasks")
    return registry, module


def incomplete(url: str, queue: str = "default") -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard(f"saq:{queue}:incomplete"))
    finally:
        client.close()


async def test_enqueue_by_name_and_function_and_wait_for_results(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        handle = await jobs.enqueue(tasks.add, 2, b=3)
        assert handle.created and handle.task == "calc.add" and handle.queue == "default"
        assert await handle.result(timeout=10) == 5
        assert await jobs.apply("calc.add", a=1) == 1
        assert await jobs.apply(tasks.plain, text="hi") == "HI"
        assert await jobs.apply("mail.send", to="ann") == "sent to ann"


async def test_task_parameters_named_like_job_options_reach_the_task(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        result = await jobs.with_options(timeout=77).apply(
            tasks.options_echo, timeout=3, key="mine", retries=9
        )
    assert result == {"timeout": 3, "key": "mine", "retries": 9, "job_timeout": 77}


async def test_task_defaults_apply_unless_the_call_overrides_them(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs:
        plain = await jobs.enqueue(tasks.add, a=1)
        assert (plain.job.timeout, plain.job.retries) == (42, 2)
        view = jobs.with_options(retries=5, ttl=60)
        over = await view.enqueue(tasks.add, a=1)
        assert (over.job.timeout, over.job.retries, over.job.ttl) == (42, 5, 60)
        stored = await jobs.job(over.key, task=tasks.add)
        assert stored is not None and stored.job.retries == 5 and stored.job.kwargs == {"a": 1}
        assert jobs.options.retries is None  # the view did not change the facade


async def test_failed_job_raises_with_its_error(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        with pytest.raises(JobFailedError) as caught:
            await jobs.with_options(retries=1).apply(tasks.boom, message="card declined")
    assert caught.value.status.value == "failed"
    assert "ValueError: card declined" in caught.value.error
    assert "card declined" in str(caught.value) and "calc.boom" in str(caught.value)


async def test_apply_times_out_without_a_worker(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs:
        started = time.monotonic()
        with pytest.raises(JobTimeoutError, match=r"did not finish within 0\.3s"):
            await jobs.with_options(wait_timeout=0.3).apply(tasks.noop)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda j, t: j.enqueue("calc.ad", a=1), UnknownTaskError, "did you mean 'calc.add'"),
        (lambda j, t: j.enqueue(t.add, a=1, c=2), TaskArgumentsError, "unexpected argument(s) 'c'"),
        (
            lambda j, t: j.enqueue(t.add, b=2),
            TaskArgumentsError,
            "missing required argument(s) 'a'",
        ),
        (lambda j, t: j.enqueue(t.add, 1, 2, 3), TaskArgumentsError, "at most 2 positional"),
        (lambda j, t: j.enqueue(t.add, 1, a=1), TaskArgumentsError, "two values for argument 'a'"),
        (
            lambda j, t: j.enqueue(t.add, a=object()),
            UnserializableArgumentsError,
            "argument 'a' = <object object",
        ),
        (lambda j, t: j.enqueue(len), UnknownTaskError, "unknown task 'len'"),
    ],
)
async def test_bad_calls_are_rejected_before_the_broker(calc, redis_url, call, error, message):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs:
        with pytest.raises(error) as caught:
            await call(jobs, tasks)
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)
    assert incomplete(redis_url) == 0


def test_bad_job_options_are_rejected_when_given(calc):
    registry, _ = calc
    jobs = Jobs(registry, url="redis://127.0.0.1:1")
    with pytest.raises(JobOptionsError, match="timeout must be int"):
        jobs.with_options(timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(JobOptionsError, match="scheduled or delay, not both"):
        jobs.with_options(delay=1, scheduled=5)


async def test_map_returns_results_in_order(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        assert await jobs.map(tasks.add, [{"a": i, "b": 1} for i in range(20)]) == list(
            range(1, 21)
        )
        mixed = await jobs.with_options(retries=1).map(
            tasks.boom, [{"message": "x"}], return_exceptions=True
        )
        assert isinstance(mixed[0], JobFailedError)


async def test_map_validates_every_item_before_enqueueing_any(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs:
        with pytest.raises(TaskArgumentsError, match=r"map item 2: .*'c'"):
            await jobs.map(tasks.add, [{"a": 1}, {"a": 2}, {"a": 3, "c": 1}])
        with pytest.raises(UnserializableArgumentsError, match="map item 1"):
            await jobs.map(tasks.add, [{"a": 1}, {"a": {1, 2}}])
        with pytest.raises(TaskArgumentsError, match="map item 0: each item must be a mapping"):
            await jobs.map(tasks.add, [[1, 2]])  # type: ignore[list-item]
        with pytest.raises(TaskArgumentsError, match="cannot take one key"):
            await jobs.with_options(key="k").map(tasks.add, [{"a": 1}])
    assert incomplete(redis_url) == 0


async def test_duplicate_key_returns_the_existing_job_and_runs_once(calc, redis_url):
    registry, tasks = calc
    tasks.RUNS.clear()
    async with Jobs(registry, url=redis_url) as jobs:
        view = jobs.with_options(key="order-7")
        first = await view.enqueue(tasks.add, a=7)
        second = await view.enqueue(tasks.add, a=8)
        assert first.created and not second.created
        assert second.key == first.key and second.job.kwargs == {"a": 7}
        with pytest.raises(DuplicateKeyError, match="already used by a queued job of task"):
            await view.enqueue(tasks.noop)
        async with in_process_workers(registry, url=redis_url):
            assert await second.result(timeout=10) == 7
            third = await view.apply(tasks.add, a=9)  # done: the key is free again
    assert third == 9
    assert [run for run in tasks.RUNS if run[0] == "add"] == [("add", 7, 0), ("add", 9, 0)]


async def test_lookup_abort_and_status(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs:
        later = await jobs.with_options(delay=3600).enqueue(tasks.add, a=1)
        soon = await jobs.enqueue(tasks.add, a=2)
        found = await jobs.job(later.key)
        assert found is not None and found.task == "calc.add"
        assert await jobs.job("no-such-key") is None
        statuses = {s.name: s for s in await jobs.status()}
        assert set(statuses) == {"default", "mail"}
        assert (statuses["default"].queued, statuses["default"].scheduled) == (1, 1)
        assert await jobs.abort(soon.key, task=tasks.add)
        assert not await jobs.abort("no-such-key")
        await later.abort("changed my mind")
        assert (await later.refresh()).status.value == "aborted"
        assert (await soon.refresh()).status.value == "aborted"
        with pytest.raises(JobFailedError, match="aborted"):
            await soon.result(timeout=5)
        statuses = {s.name: s for s in await jobs.status()}
        assert (statuses["default"].queued, statuses["default"].scheduled) == (0, 0)


async def test_failed_count_and_workers_in_status(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        await jobs.with_options(retries=1).map(
            tasks.boom, [{"message": "x"}] * 2, return_exceptions=True
        )
        (default,) = await jobs.status(["default"])
    assert default.failed == 2
    assert len(default.workers) == 1


async def test_result_of_a_job_that_finished_before_anyone_listened(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs:
        handle = await jobs.enqueue(tasks.add, a=4, b=4)
        async with in_process_workers(registry, url=redis_url):
            while (await handle.refresh()).status.value != "complete":
                await asyncio.sleep(0.01)
        started = time.monotonic()
        assert await handle.result(timeout=5) == 8
        assert time.monotonic() - started < 1


async def test_apply_waits_on_notifications_not_on_a_poll_interval(calc, redis_url):
    """SAQ's own Queue.apply polls every 0.5 s; ours is woken by the job's notification."""
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        await jobs.apply(tasks.noop)  # connect and subscribe
        times = []
        for _ in range(15):
            started = time.perf_counter()
            await jobs.apply(tasks.noop)
            times.append(time.perf_counter() - started)
    times.sort()
    assert times[len(times) // 2] < 0.25, times


async def test_concurrent_applies_each_get_their_own_result(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        results = await asyncio.gather(*(jobs.apply(tasks.add, a=i) for i in range(50)))
        task = asyncio.create_task(jobs.apply(tasks.add, a=5, b=5))  # works like a coroutine
        mapped = asyncio.ensure_future(jobs.map(tasks.add, [{"a": 1}]))
        assert (await task, await mapped) == (10, [1])
    assert results == list(range(50))


async def test_a_closed_facade_says_how_to_open_it(calc, redis_url):
    registry, tasks = calc
    jobs = Jobs(registry, url=redis_url)
    with pytest.raises(Exception, match="async with Jobs"):
        await jobs.enqueue(tasks.noop)


async def test_roots_are_discovered_and_queues_connected_lazily(calc, redis_url):
    registry, _ = calc
    async with Jobs(registry.roots, url=redis_url) as jobs:
        assert set(jobs.registry.tasks) == set(registry.tasks)
        await jobs.enqueue("mail.send", to="x")
        assert set(jobs._state.queues) == {"mail"}
    assert jobs._state.queues == {}


async def test_a_lost_notification_connection_costs_seconds_not_a_hang(calc, redis_url):
    registry, tasks = calc
    async with Jobs(registry, url=redis_url) as jobs, in_process_workers(registry, url=redis_url):
        waiting = asyncio.ensure_future(
            jobs.with_options(wait_timeout=15).apply(tasks.sleepy, seconds=0.5)
        )
        while not any(listener.running for listener in jobs._state.listeners.values()):
            await asyncio.sleep(0.01)  # until subscribed
        client = redis.asyncio.Redis.from_url(redis_url)
        killed = await client.client_kill_filter(_type="pubsub")
        await client.aclose()
        assert killed >= 1
        started = time.monotonic()
        assert await waiting == "slept"
        assert time.monotonic() - started < 8
        assert await jobs.apply(tasks.add, a=1) == 1  # subscribed again


async def test_scheduled_at_a_datetime(calc, redis_url):
    from datetime import datetime, timedelta, timezone

    registry, tasks = calc
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    async with Jobs(registry, url=redis_url) as jobs:
        handle = await jobs.with_options(scheduled=when).enqueue(tasks.noop)
        assert handle.job.scheduled == int(when.timestamp())
        (default,) = await jobs.status(["default"])
        assert (default.queued, default.scheduled) == (0, 1)
    with pytest.raises(JobOptionsError, match="timezone-aware"):
        jobs.with_options(scheduled=datetime.now())


def test_tasks_saq_cannot_call_by_keyword_are_rejected_with_the_reason(make_app, redis_url):
    base = make_app(
        {
            "app/domain/odd/jobs/tasks.py": (
                "async def positional(ctx, a, /, b):\n    return a\n"
                "async def starred(ctx, *items):\n    return items\n"
                "async def anything(ctx, **extra):\n    return extra\n"
            )
        }
    )
    registry = discover(f"{base.name}.domain")

    async def attempt(name: str, **kwargs: object) -> None:
        async with Jobs(registry, url=redis_url) as jobs:
            await jobs.enqueue(name, **kwargs)

    for name in ("odd.positional", "odd.starred"):
        with pytest.raises(TaskArgumentsError, match="SAQ passes task arguments by keyword only"):
            asyncio.run(attempt(name, a=1, b=2))
    asyncio.run(attempt("odd.anything", whatever=1, other="x"))  # **kwargs takes any name
    assert incomplete(redis_url) == 1


async def test_a_broker_out_of_reach_is_one_error_type_from_every_call(calc):
    # The same BrokerUnreachableError workers and the CLI raise, naming the broker without
    # its password; the driver's own error is chained as its cause.
    from domainjobs import BrokerUnreachableError
    from tests.servers import redis_server

    registry, _ = calc
    with redis_server() as url:
        secret_url = url.replace("redis://", "redis://:s3cret-pw@")
        async with Jobs(registry, url=url) as jobs:
            handle = await jobs.enqueue("calc.add", 1, b=2)  # the broker answers
            assert handle.status == "queued"
    # the server is gone now: every call says so, in one sentence
    async with Jobs(registry, url=url) as jobs:
        calls = {
            "enqueue": lambda: jobs.enqueue("calc.add", 1),
            "enqueue_many": lambda: jobs.enqueue_many("calc.add", [{"a": 1}]),
            "apply": lambda: jobs.apply("calc.add", 1),
            "map": lambda: jobs.map("calc.add", [{"a": 1}]),
            "job": lambda: jobs.job("some-key"),
            "abort": lambda: jobs.abort("some-key"),
            "status": lambda: jobs.status(),
            "handle.refresh": lambda: handle.refresh(),
            "handle.abort": lambda: handle.abort(),
        }
        for what, call in calls.items():
            with pytest.raises(BrokerUnreachableError) as caught:
                await call()
            message = str(caught.value)
            assert message.startswith(f"broker {url.rsplit('/', 1)[0]}"), (what, message)
            assert "is unreachable" in message and "DOMAINJOBS_URL" in message, (what, message)
            assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError), what
    async with Jobs(registry, url=secret_url) as jobs:
        with pytest.raises(BrokerUnreachableError) as caught:
            await jobs.enqueue("calc.add", 1)
        assert "s3cret-pw" not in str(caught.value) and "***" in str(caught.value)
