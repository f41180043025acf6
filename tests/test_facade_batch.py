"""Batch enqueue (``Jobs.enqueue_many``, ``brokers.batch.enqueue_jobs``) and the quiet
enqueue path, against real Redis and PostgreSQL servers and real SAQ workers."""

from __future__ import annotations

import importlib
import json
import logging
import uuid
from pathlib import Path
from types import ModuleType

import pytest
import redis
from saq.job import Job, Status
from saq.queue.redis import RedisQueue

from domainjobs import (
    Jobs,
    Registry,
    TaskArgumentsError,
    UnknownTaskError,
    UnserializableArgumentsError,
    discover,
)
from domainjobs.brokers._quiet import SAQ_ENQUEUE_SCRIPT, QuietLogs
from domainjobs.brokers.batch import enqueue_jobs
from domainjobs.lifespan import in_process_workers
from tests.conftest import run_cli
from tests.shop_fixtures import SHOP, env  # noqa: F401  (fixture)

TASKS = """
from domainjobs import task

@task(timeout=42)
async def add(ctx, a: int, b: int = 0) -> int:
    return a + b
"""


@pytest.fixture
def calc(make_app) -> tuple[Registry, ModuleType]:
    base: Path = make_app({"app/domain/calc/jobs/tasks.py": TASKS})
    registry = discover(f"{base.name}.domain")
    return registry, importlib.import_module(f"{base.name}.domain.calc.jobs.tasks")


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


async def test_enqueue_many_runs_every_job_in_order_across_chunks(calc, fresh_redis_url):
    registry, tasks = calc
    url = fresh_redis_url
    client = sync_client(url)
    client.config_resetstat()
    async with Jobs(registry, url=url) as jobs:
        handles = await jobs.enqueue_many(tasks.add, [{"a": i, "b": 1} for i in range(1200)])
        assert len(handles) == 1200 and all(h.created for h in handles)
        assert len({h.key for h in handles}) == 1200
        # SAQ's own list order: the queue holds the jobs in the order given
        queued = [i.decode() for i in client.lrange("saq:default:queued", 0, -1)]
        assert queued == [h.job.id for h in handles]
        stats = client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1200
        # three pipelines of at most 500 jobs: the script is checked once per pipeline
        assert stats["cmdstat_script|exists"]["calls"] == 3
        async with in_process_workers(registry, url=url):
            results = [await h.result(timeout=60) for h in handles]
    assert results == [i + 1 for i in range(1200)]
    client.close()


async def test_enqueue_many_stores_jobs_as_saq_enqueue_does(calc, redis_url):
    registry, tasks = calc
    client = sync_client(redis_url)
    async with Jobs(registry, url=redis_url) as jobs:
        view = jobs.with_options(retries=3, meta={"origin": "batch"})
        (batched,) = await view.enqueue_many(tasks.add, [{"a": 1}])
        single = await view.enqueue(tasks.add, a=1)
        stored = {}
        for handle in (batched, single):
            raw = client.get(handle.job.id)
            assert raw is not None
            stored[handle.key] = json.loads(raw)
            assert client.zscore("saq:default:incomplete", handle.job.id) == 0
        one, other = stored[batched.key], stored[single.key]
        assert one.keys() == other.keys()
        for field in ("function", "kwargs", "timeout", "retries", "meta", "status", "queue"):
            assert one[field] == other[field], field
        assert one["timeout"] == 42 and one["retries"] == 3 and one["status"] == "queued"
        # SAQ's reader sees the same job
        fetched = await jobs.job(batched.key, task=tasks.add)
        assert fetched is not None and fetched.job.status == Status.QUEUED
        assert fetched.job.kwargs == {"a": 1}
    client.close()


async def test_enqueue_many_validates_every_item_before_enqueueing_any(calc, redis_url):
    registry, tasks = calc
    client = sync_client(redis_url)
    async with Jobs(registry, url=redis_url) as jobs:
        with pytest.raises(TaskArgumentsError, match=r"enqueue_many item 2: .*'c'"):
            await jobs.enqueue_many(tasks.add, [{"a": 1}, {"a": 2}, {"a": 3, "c": 1}])
        with pytest.raises(UnserializableArgumentsError, match="enqueue_many item 1"):
            await jobs.enqueue_many(tasks.add, [{"a": 1}, {"a": {1, 2}}])
        with pytest.raises(TaskArgumentsError, match="item 0: each item must be a mapping"):
            await jobs.enqueue_many(tasks.add, [[1, 2]])  # type: ignore[list-item]
        with pytest.raises(TaskArgumentsError, match="cannot take one key"):
            await jobs.with_options(key="k").enqueue_many(tasks.add, [{"a": 1}])
        with pytest.raises(UnknownTaskError):
            await jobs.enqueue_many("calc.nope", [{"a": 1}])
        assert client.zcard("saq:default:incomplete") == 0
        assert await jobs.enqueue_many(tasks.add, []) == []
        assert client.zcard("saq:default:incomplete") == 0
    client.close()


async def test_enqueue_many_with_a_delay_schedules_every_job(calc, redis_url):
    registry, tasks = calc
    client = sync_client(redis_url)
    async with Jobs(registry, url=redis_url) as jobs:
        handles = await jobs.with_options(delay=3600).enqueue_many(
            tasks.add, [{"a": i} for i in range(3)]
        )
        assert client.llen("saq:default:queued") == 0  # scheduled, not queued
        scores = [client.zscore("saq:default:incomplete", h.job.id) for h in handles]
        assert all(score is not None and score > 0 for score in scores)
        (status,) = await jobs.status(["default"])
        assert status.scheduled == 3
    client.close()


async def test_enqueue_jobs_keeps_saqs_duplicate_key_rule(redis_url):
    queue = RedisQueue.from_url(redis_url, name="default")
    await queue.connect()
    try:
        assert await queue.enqueue(Job(function="f", key="taken")) is not None
        await queue.redis.set(Job(function="f", key="aborting", queue=queue).abort_id, "x")
        jobs = [
            Job(function="f", key="fresh"),
            Job(function="f", key="taken"),
            Job(function="f", key="aborting"),
            Job(function="f", key="twice"),
            Job(function="f", key="twice"),
        ]
        results = await enqueue_jobs(queue, jobs, chunk=2)
        assert [r is not None for r in results] == [True, False, False, True, False]
        # the job already there is untouched
        existing = await queue.job("taken")
        assert existing is not None and existing.status == Status.QUEUED
        assert await queue.count("queued") == 3  # taken, fresh, twice
        with pytest.raises(ValueError, match="chunk"):
            await enqueue_jobs(queue, [Job(function="f")], chunk=0)
        other = RedisQueue.from_url(redis_url, name="other")
        with pytest.raises(ValueError, match="different queue"):
            await enqueue_jobs(queue, [Job(function="f", queue=other)])
    finally:
        await queue.disconnect()


async def test_before_enqueue_callbacks_see_every_job(redis_url):
    queue = RedisQueue.from_url(redis_url, name="default")
    await queue.connect()
    seen: list[str] = []

    async def track(job: Job) -> None:
        seen.append(job.key)

    queue.register_before_enqueue(track)
    try:
        jobs = [Job(function="f") for _ in range(4)]
        await enqueue_jobs(queue, jobs)
        assert seen == [job.key for job in jobs]
    finally:
        await queue.disconnect()


class CountingJob(Job):
    """A SAQ job that counts how often its log text is built."""

    infos = 0

    def info(self, full: bool = False) -> str:
        CountingJob.infos += 1
        return super().info(full)


class QuietQueue(QuietLogs, RedisQueue):
    pass


async def test_our_enqueue_script_is_saqs_byte_for_byte(redis_url):
    plain = RedisQueue.from_url(redis_url, name="plain")
    await plain.connect()
    try:
        await plain.enqueue("f")
        assert plain._enqueue_script is not None
        assert plain._enqueue_script.script == SAQ_ENQUEUE_SCRIPT
    finally:
        await plain.disconnect()


async def test_quiet_enqueue_builds_log_text_only_when_it_is_logged(redis_url, caplog):
    queue = QuietQueue.from_url(redis_url, name="default")
    await queue.connect()
    saq_logger = logging.getLogger("saq")
    level = saq_logger.level
    try:
        CountingJob.infos = 0
        saq_logger.setLevel(logging.WARNING)
        assert await queue.enqueue(CountingJob(function="f", key="a")) is not None
        assert CountingJob.infos == 0
        assert await queue.enqueue(CountingJob(function="f", key="a")) is None  # duplicate
        saq_logger.setLevel(logging.INFO)
        with caplog.at_level(logging.INFO, logger="saq"):
            assert await queue.enqueue(CountingJob(function="f", key="b")) is not None
        assert CountingJob.infos == 1
        assert any("Enqueuing Job<" in r.getMessage() for r in caplog.records)
        stored = await queue.job("a")
        assert stored is not None and stored.status == Status.QUEUED
    finally:
        saq_logger.setLevel(level)
        await queue.disconnect()


async def test_quiet_finish_builds_log_text_only_when_it_is_logged(redis_url, caplog):
    queue = QuietQueue.from_url(redis_url, name="default")
    await queue.connect()
    saq_logger = logging.getLogger("saq")
    level = saq_logger.level
    try:
        saq_logger.setLevel(logging.WARNING)
        jobs = [CountingJob(function="f", key=k, ttl=60) for k in ("ok", "bad", "gone")]
        for job in jobs:
            assert await queue.enqueue(job) is not None
        CountingJob.infos = 0
        await queue.finish(jobs[0], Status.COMPLETE, result=7)
        await queue.finish(jobs[1], Status.FAILED, error="boom")
        assert CountingJob.infos == 0
        assert (queue.complete, queue.failed, queue.aborted) == (1, 1, 0)
        done = await queue.job("ok")
        assert done is not None and done.status == Status.COMPLETE and done.result == 7
        assert done.progress == 1.0 and done.completed > 0
        failed = await queue.job("bad")
        assert failed is not None and failed.status == Status.FAILED and failed.error == "boom"
        assert await queue.count("incomplete") == 1
        saq_logger.setLevel(logging.INFO)
        with caplog.at_level(logging.INFO, logger="saq"):
            await queue.finish(jobs[2], Status.ABORTED, error="stop")
        assert CountingJob.infos == 1 and queue.aborted == 1
        assert any("Finished Job<" in r.getMessage() for r in caplog.records)
    finally:
        saq_logger.setLevel(level)
        await queue.disconnect()


PG_TASKS = """
from domainjobs import task

@task(queue="QUEUE")
async def double(ctx, n: int) -> int:
    return 2 * n
"""


async def test_enqueue_many_on_postgres(make_app, postgres_url):
    pytest.importorskip("psycopg")
    queue = f"pg_{uuid.uuid4().hex[:8]}"  # the cluster is shared by the session
    base = make_app({"app/domain/math/jobs/tasks.py": PG_TASKS.replace("QUEUE", queue)})
    registry = discover(f"{base.name}.domain")
    tasks = importlib.import_module(f"{base.name}.domain.math.jobs.tasks")
    async with Jobs(registry, url=postgres_url) as jobs:
        with pytest.raises(TaskArgumentsError, match="enqueue_many item 1"):
            await jobs.enqueue_many(tasks.double, [{"n": 1}, {"m": 2}])
        (status,) = await jobs.status([queue])
        assert status.queued == 0
        handles = await jobs.enqueue_many(tasks.double, [{"n": i} for i in range(30)])
        assert all(h.created for h in handles)
        async with in_process_workers(registry, url=postgres_url):
            results = [await h.result(timeout=60) for h in handles]
    assert results == [2 * i for i in range(30)]


def test_cli_many_enqueues_one_job_per_line(env, redis_url, tmp_path):
    lines = tmp_path / "skus.jsonl"
    lines.write_text('{"sku": "tea"}\n\n{"sku": "cake"}\n{"sku": "jam"}\n')
    result = run_cli("enqueue", "catalog.price_of", "--many", str(lines), cwd=SHOP, env=env)
    assert result.returncode == 0, result.stderr
    keys = result.stdout.split()
    assert len(keys) == 3
    assert "catalog.price_of: 3 job(s) enqueued on queue 'default'" in result.stderr
    client = redis.Redis.from_url(redis_url)
    stored = [json.loads(client.get(f"saq:job:default:{key}")) for key in keys]
    client.close()
    assert [job["kwargs"] for job in stored] == [{"sku": "tea"}, {"sku": "cake"}, {"sku": "jam"}]


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (
            '{"sku": "tea"}\n[1]\n',
            [],
            "line 2 must be a JSON object of keyword arguments, got list",
        ),
        ('{"sku": "tea"}\n{nope\n', [], "line 2 is not valid JSON"),
        ('{"sku": "tea"}\n{"skew": 1}\n', [], "enqueue_many item 1"),
        ('{"sku": "tea"}\n', ["--wait"], "cannot be combined with --kwargs, --key or --wait"),
    ],
)
def test_cli_many_checks_every_line_before_enqueueing(
    env, redis_url, tmp_path, content, extra, message
):
    lines = tmp_path / "skus.jsonl"
    lines.write_text(content)
    result = run_cli(
        "enqueue", "catalog.price_of", "--many", str(lines), *extra, cwd=SHOP, env=env
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    client = redis.Redis.from_url(redis_url)
    assert client.zcard("saq:default:incomplete") == 0
    client.close()
