"""Workers built from discovery are ordinary saq.Workers, on a real Redis server."""

from __future__ import annotations

import asyncio

import pytest
from saq import Queue, Worker

from domainjobs import build_worker, build_workers, discover, run_workers
from domainjobs.runtime.worker import saq_cron_job

HOOKED_APP = {
    "app/domain/a/jobs/startup.py": """
        import os
        def open_resource(ctx):
            ctx.setdefault("opened", 0)
            ctx["opened"] += 1
            ctx["resource"] = {"log": []}
            ctx["order"] = ["a.open"]
    """,
    "app/domain/a/jobs/shutdown.py": """
        import os
        def close_resource(ctx):
            with open(os.environ["DJ_TEST_LOG"], "a") as f:
                f.write("a.close\\n")
    """,
    "app/domain/a/jobs/tasks.py": """
        async def use_resource(ctx, value: int) -> int:
            ctx["resource"]["log"].append(value)
            return ctx["opened"]

        def plain_sum(ctx, x: int, y: int) -> int:
            return x + y
    """,
    "app/domain/b/jobs/__init__.py": 'job_defaults = {"queue": "other"}\n',
    "app/domain/b/jobs/startup.py": """
        def second(ctx):
            ctx["order"].append("b.open")
    """,
    "app/domain/b/jobs/shutdown.py": """
        import os
        def broken_close(ctx):
            with open(os.environ["DJ_TEST_LOG"], "a") as f:
                f.write("b.close\\n")
            raise RuntimeError("close failed")
    """,
    "app/domain/b/jobs/tasks.py": """
        async def order(ctx) -> list:
            return ctx["order"]
    """,
}


async def wait_done(queue: Queue, job, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await job.refresh()
        if job.status in ("complete", "failed", "aborted"):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"job {job.key} still {job.status}")
        await asyncio.sleep(0.02)


async def test_plain_saq_client_enqueues_by_public_name(make_app, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DJ_TEST_LOG", str(tmp_path / "log"))
    base = make_app(HOOKED_APP)
    registry = discover(f"{base.name}.domain")
    worker = build_worker(registry, queue="default", url=redis_url)
    assert isinstance(worker, Worker)
    assert set(worker.functions) == {"a.use_resource", "a.plain_sum"}
    client = Queue.from_url(redis_url, name="default")
    await client.connect()
    task = asyncio.create_task(run_workers([worker], handle_signals=False))
    try:
        first = await client.enqueue("a.use_resource", value=7)
        second = await client.enqueue("a.plain_sum", x=2, y=3)
        first, second = await wait_done(client, first), await wait_done(client, second)
        assert (first.status, first.result) == ("complete", 1)
        assert (second.status, second.result) == ("complete", 5)
    finally:
        await worker.stop()
        await task
        await client.disconnect()


async def test_hooks_run_once_per_process_across_queues(make_app, redis_url, tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("DJ_TEST_LOG", str(log))
    base = make_app(HOOKED_APP)
    registry = discover(f"{base.name}.domain")
    workers = build_workers(registry, url=redis_url)
    assert sorted(w.queue.name for w in workers) == ["default", "other"]
    client_a = Queue.from_url(redis_url, name="default")
    client_b = Queue.from_url(redis_url, name="other")
    await client_a.connect()
    await client_b.connect()
    runner = asyncio.create_task(run_workers(workers, handle_signals=False))
    try:
        job_a = await wait_done(client_a, await client_a.enqueue("a.use_resource", value=1))
        job_b = await wait_done(client_b, await client_b.enqueue("b.order"))
        # startup ran once (opened == 1) in domain order, and both queues see its context
        assert job_a.result == 1
        assert job_b.result == ["a.open", "b.open"]
    finally:
        for worker in workers:
            await worker.stop()
        status = await runner
        await client_a.disconnect()
        await client_b.disconnect()
    # shutdown hooks ran once, in reverse order, the second still ran after the first raised,
    # and the failure makes the exit status 1
    assert log.read_text().splitlines() == ["b.close", "a.close"]
    assert status == 1


async def test_two_domains_cron_jobs_have_distinct_keys(make_app, redis_url):
    cleanup = """
        from domainjobs import cron

        @cron("* * * * * *")
        async def cleanup(ctx):
            return "done"
    """
    base = make_app({"app/domain/a/jobs/tasks.py": cleanup, "app/domain/b/jobs/tasks.py": cleanup})
    registry = discover(f"{base.name}.domain")
    jobs = [saq_cron_job(spec) for spec in registry.crons]
    assert [j.function.__qualname__ for j in jobs] == ["a.cleanup", "b.cleanup"]
    worker = build_worker(registry, url=redis_url)
    await worker.queue.connect()
    try:
        await worker.schedule()
        info = await worker.queue.info(jobs=True)
        keys = {job["key"].rsplit(":", 1)[0] for job in info["jobs"]}
        functions = {job["function"] for job in info["jobs"]}
        # one job per tick, keyed by public name and tick time: the domains never collide
        assert keys == {"cron:a.cleanup", "cron:b.cleanup"}
        assert functions == {"a.cleanup", "b.cleanup"}
    finally:
        await worker.queue.disconnect()


async def test_both_cron_jobs_fire(make_app, redis_url):
    cleanup = """
        import redis
        from domainjobs import cron

        @cron("* * * * * *")
        def cleanup(ctx):
            ctx["hits"].incr(__name__)
    """
    startup = """
        import os, redis
        def connect(ctx):
            ctx["hits"] = redis.Redis.from_url(os.environ["DJ_HITS_URL"])
    """
    base = make_app(
        {
            "app/domain/a/jobs/tasks.py": cleanup,
            "app/domain/b/jobs/tasks.py": cleanup,
            "app/domain/a/jobs/startup.py": startup,
        }
    )
    import os

    os.environ["DJ_HITS_URL"] = redis_url
    registry = discover(f"{base.name}.domain")
    worker = build_worker(registry, url=redis_url)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            a = await client.get(f"{base.name}.domain.a.jobs.tasks")
            b = await client.get(f"{base.name}.domain.b.jobs.tasks")
            if a and b:
                break
            assert asyncio.get_running_loop().time() < deadline, "both cron jobs should fire"
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        await runner
        await client.aclose()
        del os.environ["DJ_HITS_URL"]


async def test_build_worker_accepts_a_saq_queue(make_app, redis_url):
    base = make_app({"app/domain/a/jobs/tasks.py": "async def t(ctx):\n    return 1\n"})
    queue = Queue.from_url(redis_url, name="default")
    worker = build_worker(f"{base.name}.domain", queue=queue, concurrency=3)
    assert worker.queue is queue and worker.concurrency == 3
    assert list(worker.functions) == ["a.t"]


def test_build_worker_without_url_is_a_clear_error(make_app, monkeypatch):
    from domainjobs import ConfigError

    monkeypatch.delenv("DOMAINJOBS_URL", raising=False)
    monkeypatch.setenv("DOMAINJOBS_EMBEDDED", "false")  # else: the embedded broker
    base = make_app({"app/domain/a/jobs/tasks.py": "async def t(ctx):\n    return 1\n"})
    with pytest.raises(ConfigError, match="broker"):
        build_worker(f"{base.name}.domain")


def test_user_timers_merge_with_the_sweep_default(make_app, redis_url):
    from domainjobs.runtime.worker import WORKER_DEFAULTS

    base = make_app({"app/domain/a/jobs/tasks.py": "async def t(ctx):\n    return 1\n"})
    worker = build_worker(f"{base.name}.domain", url=redis_url, timers={"schedule": 5})
    assert worker.timers["schedule"] == 5
    assert worker.timers["sweep"] == WORKER_DEFAULTS["timers"]["sweep"]


async def test_failed_startup_skips_shutdown_hooks_of_unstarted_domains(
    make_app, redis_url, tmp_path, monkeypatch
):
    log = tmp_path / "log"
    monkeypatch.setenv("DJ_TEST_LOG", str(log))
    record = """
        import os
        def {name}(ctx):
            with open(os.environ["DJ_TEST_LOG"], "a") as f:
                f.write("{name}\\n")
            {extra}
    """
    base = make_app(
        {
            "app/domain/a/jobs/startup.py": record.format(name="a_open", extra="ctx['a'] = 1"),
            "app/domain/a/jobs/shutdown.py": record.format(name="a_close", extra="ctx['a']"),
            "app/domain/b/jobs/startup.py": record.format(
                name="b_open", extra="raise OSError('no db')"
            ),
            "app/domain/b/jobs/shutdown.py": record.format(name="b_close", extra="ctx['b_db']"),
            "app/domain/b/jobs/tasks.py": "async def t(ctx):\n    pass\n",
        }
    )
    workers = build_workers(discover(f"{base.name}.domain"), url=redis_url)
    status = await run_workers(workers, handle_signals=False)
    assert status == 1
    # a's hooks ran and a's shutdown saw a's context; b never finished starting
    assert log.read_text().splitlines() == ["a_open", "b_open", "a_close"]


async def test_user_hooks_are_merged_with_the_registry_hooks(make_app, redis_url):
    """``build_worker(startup=..., before_process=...)`` adds the caller's functions beside
    ours instead of failing with a duplicate keyword."""
    from domainjobs import DomainWorker, build_worker

    calls: list[str] = []

    async def my_startup(ctx):
        calls.append("startup")

    async def my_before(ctx):
        calls.append("before")

    base = make_app(HOOKED_APP)
    worker = build_worker(
        f"{base.name}.domain", url=redis_url, startup=my_startup, before_process=[my_before]
    )
    assert isinstance(worker, DomainWorker)
    assert my_startup in worker.startup
    assert worker.startup[0] == worker.hooks.startup
    assert my_before in worker.before_process


async def test_run_workers_refuses_a_plain_saq_worker(redis_url):
    from saq import Queue, Worker

    from domainjobs import ConfigError
    from domainjobs.runtime.runner import run_workers

    queue = Queue.from_url(redis_url)
    with pytest.raises(ConfigError, match="plain Worker"):
        await run_workers([Worker(queue, [])], handle_signals=False)
