"""The dashboard's data on every broker (a real Redis server, a real PostgreSQL cluster and
the embedded Valkey server): workers count their jobs into per-minute trend buckets, the
overview and the chart series read them back, cron jobs paused in the broker are not
scheduled, and the bucket arithmetic (merging, percentiles) is right."""

from __future__ import annotations

import asyncio
import time
from datetime import timezone

import pytest
from saq.job import Job, Status

from domainjobs import build_worker, discover, run_workers
from domainjobs.runtime import trends
from domainjobs.runtime.pauses import paused_crons, set_paused
from domainjobs.runtime.trends import DONE, FAILED, HIST, RETRIED, RUN_MS, WIDTH
from domainjobs.runtime.trendstore import RedisTrendStore, store_for
from domainjobs.web import data
from domainjobs.web.queues import QueueSet
from tests.test_postgres import (  # the same fixtures: one broker per parameter
    broker_url,
    connect,
    embedded_url,
    fresh_postgres_url,
    settle,
    stop,
)

_ = (broker_url, embedded_url, fresh_postgres_url, connect)

APP = {
    "app/domain/shop/jobs/tasks.py": """
        import asyncio

        async def ok(ctx, n: int = 0) -> int:
            await asyncio.sleep(0.03)
            return n

        async def boom(ctx) -> None:
            raise RuntimeError("boom from a test job")
    """,
    "app/domain/clock/jobs/tasks.py": """
        from domainjobs import cron

        @cron("* * * * * *")
        async def tick(ctx) -> None:
            return None

        @cron("* * * * * *")
        async def tock(ctx) -> None:
            return None
    """,
}


async def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_workers_count_jobs_and_the_overview_reads_them(make_app, broker_url, connect):
    base = make_app(APP)
    registry = discover(f"{base.name}.domain")
    worker = build_worker(registry, queue="default", url=broker_url)
    client = await connect(broker_url)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))
    queue_set = QueueSet([await connect(broker_url)])
    try:
        jobs = [await client.enqueue("shop.ok", n=n) for n in range(5)]
        jobs += [await client.enqueue("shop.boom", retries=2)]
        for job in jobs:
            await settle(job)
        assert [j.status for j in jobs] == ["complete"] * 5 + ["failed"]

        async def counted():
            view = await data.overview(registry, queue_set, "15m")
            tasks = {t.name: t for d in view.domains for t in d.tasks}
            ok, boom = tasks["shop.ok"].figures, tasks["shop.boom"].figures
            return view if (ok.done, boom.failed, boom.retried) == (5, 1, 1) else None

        # the workers flush about once a second
        view = await wait_until(counted, what="the trend counters in the broker")
        tasks = {t.name: t for d in view.domains for t in d.tasks}
        ok = tasks["shop.ok"].figures
        assert ok.failed == 0 and 25 <= ok.p50 <= 250 and ok.p95 >= ok.p50
        assert ok.wait is not None and ok.wait >= 0
        assert {d.name for d in view.domains} == {"shop", "clock"}
        assert [q.name for q in view.queues] == ["default"]
        assert view.queues[0].figures.done >= 5 and view.queues[0].trends
        assert [w.queue for w in view.workers] == ["default"]

        series = await data.trend_series(registry, queue_set, "1h", "domain")
        shop = next(s for s in series["series"] if s["name"] == "shop")
        assert len(series["x"]) == 60 and series["step"] == 60
        assert sum(shop["done"]) > 0 and sum(shop["failed"]) > 0
        by_queue = await data.trend_series(registry, queue_set, "24h", "queue")
        assert by_queue["step"] == 900 and sum(by_queue["series"][0]["done"]) > 0
    finally:
        await stop([worker], runner)


async def test_a_paused_cron_job_is_not_scheduled_until_resumed(make_app, broker_url):
    base = make_app(APP)
    worker = build_worker(discover(f"{base.name}.domain"), url=broker_url)
    await worker.queue.connect()
    try:
        await set_paused(worker.queue, "clock.tick", True)
        assert await paused_crons(worker.queue) == {"clock.tick"}
        await worker.schedule()
        found = {job.function async for job in worker.queue.iter_jobs()}
        assert found == {"clock.tock"}

        await set_paused(worker.queue, "clock.tick", False)
        assert await paused_crons(worker.queue) == frozenset()
        await worker.schedule()
        found = {job.function async for job in worker.queue.iter_jobs()}
        assert found == {"clock.tick", "clock.tock"}
    finally:
        await worker.queue.disconnect()


async def test_concurrent_flushes_add_up_in_one_bucket(connect, redis_url):
    queues = [await connect(redis_url), await connect(redis_url)]
    stores = [store_for(q) for q in queues]
    assert all(isinstance(s, RedisTrendStore) for s in stores)
    row = trends.new_row()
    row[DONE], row[RUN_MS], row[HIST + 3] = 2, 40, 2
    start = trends.MINUTE.start(time.time())
    # 40 flushes from two "workers" at once, into the same minute
    await asyncio.gather(
        *(stores[i % 2].add("default", {"m": {start: {"shop.ok": row}}}, {}) for i in range(40))
    )
    found = await stores[0].read("default", "m", [start])
    total = trends.padded(found[start]["shop.ok"])
    assert (total[DONE], total[RUN_MS], total[HIST + 3]) == (80, 1600, 80)
    ttl = await queues[0].redis.ttl(f"domainjobs:trends:default:m:{start}")
    assert 0 < ttl <= trends.MINUTE.keep


def test_rows_of_processed_jobs():
    now = int(time.time() * 1000)
    done = Job("shop.ok", status=Status.COMPLETE, queued=now - 500, started=now - 300)
    done.completed = now
    row = trends.job_row(done)
    assert row is not None and len(row) == WIDTH
    assert (row[DONE], row[RUN_MS], row[trends.WAIT_MS]) == (1, 300, 200)
    assert row[HIST + trends.histogram_index(300)] == 1
    retried = Job("shop.ok", status=Status.QUEUED)
    assert trends.job_row(retried)[RETRIED] == 1  # type: ignore[index]
    failed = Job("shop.ok", status=Status.FAILED, started=now - 5, completed=now)
    assert trends.job_row(failed)[FAILED] == 1  # type: ignore[index]
    assert trends.job_row(Job("shop.ok", status=Status.ACTIVE)) is None
    assert trends.job_row(Job("shop.ok", status=Status.NEW)) is None  # never queued


def test_percentiles_from_the_histogram():
    row = trends.new_row()
    assert trends.percentile(row, 0.5) is None
    for ms, count in ((2, 50), (40, 45), (900, 5)):
        row[HIST + trends.histogram_index(ms)] += count
    assert 1 <= trends.percentile(row, 0.5) <= 3
    assert 25 <= trends.percentile(row, 0.9) <= 50
    assert 500 <= trends.percentile(row, 0.99) <= 1000
    row[HIST + trends.histogram_index(120_000)] += 1000
    assert trends.percentile(row, 0.95) == 60_000  # beyond the last bound: the bound


@pytest.mark.parametrize(("seconds", "buckets", "step"), [(900, 15, 60), (86400, 96, 900)])
def test_windows_pick_their_buckets(seconds, buckets, step):
    resolution = data.resolution_for(seconds)
    starts = data.bucket_starts(resolution, seconds, 1_700_000_000)
    assert len(starts) == buckets and resolution.seconds == step
    assert starts == sorted(starts) and starts[-1] == resolution.start(1_700_000_000)


async def test_the_schedules_show_a_cron_jobs_last_run_and_its_lateness(
    make_app, broker_url, connect
):
    base = make_app(APP)
    registry = discover(f"{base.name}.domain")
    client = await connect(broker_url)
    await set_paused(client, "clock.tock", True)  # before any worker schedules it
    worker = build_worker(registry, url=broker_url)
    runner = asyncio.create_task(run_workers([worker], handle_signals=False))
    queue_set = QueueSet([client])
    try:

        async def ran():
            views = {v.name: v for v in await data.schedules(registry, queue_set, timezone.utc)}
            last = views["clock.tick"].last
            return views if last is not None and last.status == "complete" else None

        views = await wait_until(ran, what="clock.tick's last run, complete")
        tick, tock = views["clock.tick"], views["clock.tock"]
        assert tick.last.status == "complete" and tick.last.key.startswith("cron:clock.tick:")
        assert 0 <= tick.last.late < 10 and tick.last.tick <= time.time()
        assert not tick.paused and tock.paused
        assert tock.last is None  # paused before its first tick: it never ran
        assert len(tick.next_runs) == 3 and tick.next_runs[0].timestamp() > time.time() - 1
        assert (tick.cron, tick.timezone, tick.domain) == ("* * * * * *", "UTC", "clock")
    finally:
        await stop([worker], runner)
