"""domainjobs.testing against the plain-SAQ way of doing the same in a test, measured in
the same run on the same server.

A test that enqueues jobs must wait until they (and the jobs they enqueue) have run. With
plain SAQ the usual tool is a burst worker (``saq.Worker(burst=True, dequeue_timeout=D)``
started after the enqueue; it stops once a dequeue waits ``D`` seconds for nothing).
domainjobs.testing keeps the workers running and ``drain()`` watches the broker.

1. enqueue 1 job, or 500 no-op jobs, and wait until they have run: median time from the
   first enqueue to the end of the wait, and the ratio plain/ours.
2. a chain of 3 jobs, each enqueuing the next after 150 ms of work: how many of the
   chain's jobs have run when the wait returns (a burst worker can stop between links).
3. per-test overhead: ``JobsHarness`` open+close on a shared server, against starting and
   stopping one plain ``saq.Worker`` per queue; ``run_task`` per call against calling the
   task function with a hand-made context dict.

Usage (from the repository root)::

    .venv/bin/python bench/testing.py [--rounds 7] [--dequeue-timeout 0.1]

Nothing is asserted: the script prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

TASKS = """
import asyncio
from domainjobs import task

@task
async def noop(ctx, i: int) -> int:
    return i

@task
async def link(ctx, n: int) -> int:
    await asyncio.sleep(0.15)
    if n < 3:
        await ctx["job"].get_queue().enqueue("bench.link", n=n + 1)
    return n
"""


def make_app() -> str:
    root = Path(tempfile.mkdtemp(prefix="dj-bench-testing-"))
    jobs = root / "benchapp" / "domain" / "bench" / "jobs"
    jobs.mkdir(parents=True)
    for folder in (root / "benchapp", root / "benchapp" / "domain", jobs.parent, jobs):
        (folder / "__init__.py").write_text("")
    (jobs / "tasks.py").write_text(textwrap.dedent(TASKS))
    sys.path.insert(0, str(root))
    return "benchapp.domain"


def plain_queue(url: str) -> Any:
    """Plain SAQ's Redis queue (``Queue.from_url`` rejects unix:// URLs: build it)."""
    import redis.asyncio as aioredis
    from saq.queue.redis import RedisQueue

    return RedisQueue(aioredis.from_url(url), name="default")


async def plain_burst(url: str, registry: Any, dequeue_timeout: float) -> None:
    """Run what is queued with a plain SAQ burst worker, as a SAQ user's test would."""
    from saq import Worker

    queue = plain_queue(url)
    functions = [(spec.name, spec.function) for spec in registry.tasks.values()]
    worker = Worker(queue, functions, burst=True, dequeue_timeout=dequeue_timeout)
    worker.SIGNALS = []
    await queue.connect()
    try:
        await worker.start()
    finally:
        await queue.disconnect()


async def enqueue_plain(url: str, name: str, many: list[dict[str, Any]]) -> None:
    queue = plain_queue(url)
    await queue.connect()
    try:
        for kwargs in many:
            await queue.enqueue(name, **kwargs)
    finally:
        await queue.disconnect()


async def count(url: str, name: str, status: str) -> int:
    queue = plain_queue(url)
    await queue.connect()
    try:
        return len(
            [j async for j in queue.iter_jobs() if j.function == name and j.status == status]
        )
    finally:
        await queue.disconnect()


async def main(rounds: int, dequeue_timeout: float) -> None:
    from domainjobs import discover
    from domainjobs.testing import JobsHarness, TaskRunner, reset_broker, throwaway_server

    registry = discover(make_app())
    with throwaway_server() as url:
        print(f"server {url}; rounds {rounds}; plain SAQ burst dequeue_timeout {dequeue_timeout}s")
        for jobs_count in (1, 500):
            ours, plain, lost = [], [], []
            batch = [{"i": i} for i in range(jobs_count)]
            for _ in range(rounds):
                async with JobsHarness(registry, url=url) as harness:
                    start = time.perf_counter()
                    for kwargs in batch:
                        await harness.jobs.enqueue("bench.noop", **kwargs)
                    log = await harness.drain()
                    ours.append(time.perf_counter() - start)
                    assert len(log) == jobs_count
                    assert not log.pending
                reset_broker(url)
                start = time.perf_counter()
                await enqueue_plain(url, "bench.noop", batch)
                await plain_burst(url, registry, dequeue_timeout)
                plain.append(time.perf_counter() - start)
                lost.append(jobs_count - await count(url, "bench.noop", "complete"))
                reset_broker(url)
            o, p = statistics.median(ours), statistics.median(plain)
            print(
                f"enqueue+wait {jobs_count:>3} job(s): drain {o * 1000:8.1f} ms   "
                f"plain burst {p * 1000:8.1f} ms   plain/ours {p / o:5.2f}   "
                f"jobs not complete after the plain burst, per round: {lost}"
            )

        ran_ours, ran_plain = [], []
        for _ in range(rounds):
            async with JobsHarness(registry, url=url) as harness:
                await harness.jobs.enqueue("bench.link", n=1)
                log = await harness.drain()
                ran_ours.append(len(log.of("bench.link").results("bench.link")))
            reset_broker(url)
            await enqueue_plain(url, "bench.link", [{"n": 1}])
            await plain_burst(url, registry, dequeue_timeout)
            ran_plain.append(await count(url, "bench.link", "complete"))
            reset_broker(url)
        print(
            f"chain of 3 (150 ms per link): ran by drain {ran_ours}   "
            f"ran by plain burst {ran_plain}"
        )

        opens, plains = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            async with JobsHarness(registry, url=url):
                pass
            opens.append(time.perf_counter() - start)
            start = time.perf_counter()
            from saq import Worker

            queue = plain_queue(url)
            await queue.connect()
            worker = Worker(
                queue,
                [(s.name, s.function) for s in registry.tasks.values()],
                dequeue_timeout=0.1,
            )
            worker.SIGNALS = []
            task = asyncio.create_task(worker.start())
            while not worker.tasks:
                await asyncio.sleep(0.001)
            await worker.stop()
            await task
            await queue.disconnect()
            plains.append(time.perf_counter() - start)
        o, p = statistics.median(opens), statistics.median(plains)
        print(
            f"per-test setup+teardown: JobsHarness {o * 1000:7.1f} ms   "
            f"plain saq.Worker start/stop {p * 1000:7.1f} ms   ours/plain {o / p:5.2f}"
        )

        spec = registry.task("bench.noop")
        calls = 200
        start = time.perf_counter()
        async with TaskRunner(registry) as runner:
            for i in range(calls):
                await runner.run("bench.noop", i=i)
        ours_call = (time.perf_counter() - start) / calls
        start = time.perf_counter()
        for i in range(calls):
            await spec.function({"worker": None, "job": None}, i=i)
        bare_call = (time.perf_counter() - start) / calls
        print(
            f"run one task directly: TaskRunner.run {ours_call * 1e6:7.1f} us/call "
            f"(incl. one startup/shutdown)   bare call {bare_call * 1e6:5.1f} us/call"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dequeue-timeout", type=float, default=0.1)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.dequeue_timeout))
