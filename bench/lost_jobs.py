"""Lost jobs out of N: plain SAQ against domainjobs, measured in the same run.

1. fresh broker: a brand-new redis-server, N no-op jobs enqueued, W worker processes
   started at once in burst mode; every job's final status is read back from the broker
   and every run counted by the task itself (an INCR per job key).
2. soak: W worker processes sweeping every P seconds while a producer enqueues jobs
   continuously for S seconds (jobs take 0-20 ms, so sweeps always find running jobs);
   then the same count.

Plain SAQ is ``saq.queue.redis.RedisQueue`` with the same worker settings (its sweep on a
fresh server at SAQ's 60 s period; in the soak at the same short period, which is what
domainjobs' default relies on). Usage (from the repository root)::

    .venv/bin/python bench/lost_jobs.py                        # defaults below
    .venv/bin/python bench/lost_jobs.py --jobs 3000 --rounds 5 --soak-seconds 30

3. throughput: the price of the fix, one in-process worker draining no-op jobs through
   SAQ's ``RedisQueue`` and through ``SweepSafeRedisQueue`` (same settings, rounds
   interleaved), medians and their ratio.

Nothing is asserted: the script prints a table. "lost" counts jobs that did not end
``complete`` (``aborted``, stuck ``aborting``, or left ``queued``/``active`` with no worker
to pick them up: a plain sweep re-queues some jobs after its 5 s abort wait, when the burst
workers may be gone); "twice" counts jobs whose task ran more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.servers import redis_server  # noqa: E402  (the suite's throwaway server)
from tests.sweep_helpers import (  # noqa: E402
    RACE_APP,
    final_statuses,
    run_counts,
    start_script_worker,
    stop,
)

from domainjobs.brokers.urls import queue_from_url  # noqa: E402


@contextmanager
def race_app() -> Iterator[tuple[str, str]]:
    """The test suite's counting app, written to a temporary directory."""
    import textwrap

    with tempfile.TemporaryDirectory(prefix="dj-lost-") as tmp:
        top = Path(tmp) / "lostbench"
        for rel, source in RACE_APP.items():
            path = Path(tmp) / rel.replace("app/", "lostbench/", 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        for folder in [top, top / "domain", top / "domain/race", top / "domain/race/jobs"]:
            (folder / "__init__.py").touch()
        yield "lostbench.domain", tmp


async def _enqueue(url: str, n: int, **kwargs: Any) -> list[str]:
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        jobs = await asyncio.gather(*(queue.enqueue("race.touch", **kwargs) for _ in range(n)))
        return [job.key for job in jobs if job is not None]
    finally:
        await queue.disconnect()


async def _statuses(url: str, keys: list[str]) -> dict[str, int]:
    queue = queue_from_url(url, "default")
    await queue.connect()
    try:
        return dict(await final_statuses(queue, keys))
    finally:
        await queue.disconnect()


def _tally(url: str, counter: str, keys: list[str]) -> dict[str, int]:
    statuses = asyncio.run(_statuses(url, keys))
    runs = run_counts(counter, keys)
    return {
        "jobs": len(keys),
        "lost": len(keys) - statuses.get("complete", 0),
        "aborted": statuses.get("aborted", 0),
        "aborting": statuses.get("aborting", 0),
        "left queued/active": statuses.get("queued", 0) + statuses.get("active", 0),
        "never ran": sum(1 for r in runs if r == 0),
        "twice": sum(1 for r in runs if r > 1),
    }


def fresh_round(plain: bool, jobs: int, workers: int, roots: str, app_dir: str) -> dict[str, int]:
    """One fresh-broker round: returns the tally."""
    with redis_server() as url, redis_server() as counter:
        keys = asyncio.run(_enqueue(url, jobs))
        procs = [
            start_script_worker(
                url, roots, app_dir, counter, sweep=60 if plain else 2, plain=plain, burst=True
            )
            for _ in range(workers)
        ]
        for proc in procs:
            proc.wait(300)
        time.sleep(0.5)  # let a plain sweep's abort settle (it waits up to 5 s at most)
        return _tally(url, counter, keys)


def soak_round(
    plain: bool, seconds: float, period: int, workers: int, roots: str, app_dir: str
) -> dict[str, int]:
    """One soak: jobs flow for ``seconds`` while workers sweep every ``period`` s."""
    with redis_server() as url, redis_server() as counter:
        procs = [
            start_script_worker(url, roots, app_dir, counter, sweep=period, plain=plain)
            for _ in range(workers)
        ]
        try:
            time.sleep(3)  # the workers start
            keys: list[str] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                keys += asyncio.run(_enqueue(url, 20, work_ms=20))
                time.sleep(0.02)
            quiet = time.monotonic() + 30
            while time.monotonic() < quiet:
                done = asyncio.run(_statuses(url, keys))
                if done.get("queued", 0) + done.get("active", 0) == 0:
                    break
                time.sleep(0.5)
            time.sleep(6)  # a plain sweep's abort of the last jobs may still be under way
        finally:
            stop(procs)
        return _tally(url, counter, keys)


def _row(scenario: str, variant: str, tally: dict[str, int]) -> str:
    cells = [scenario, variant, *(str(tally[k]) for k in HEADER[2:])]
    return " | ".join(cells)


HEADER = [
    "scenario",
    "variant",
    "jobs",
    "lost",
    "aborted",
    "aborting",
    "left queued/active",
    "never ran",
    "twice",
]


def _add(total: dict[str, int], tally: dict[str, int]) -> None:
    for key, value in tally.items():
        total[key] = total.get(key, 0) + value


async def _drain_rate(url: str, sweep_safe: bool, jobs: int) -> float:
    """Jobs/s of one in-process worker draining ``jobs`` no-op jobs, sweeping every 2 s."""
    import redis.asyncio as aioredis
    from saq import Worker
    from saq.queue.redis import RedisQueue

    from domainjobs.brokers.redis import SweepSafeRedisQueue

    async def noop(ctx: dict[str, Any]) -> None:
        return None

    client = aioredis.from_url(url)
    await client.flushdb()
    queue_class = SweepSafeRedisQueue if sweep_safe else RedisQueue
    queue = queue_class(client, name="default")
    await queue.connect()
    try:
        await asyncio.gather(*(queue.enqueue("noop") for _ in range(jobs)))
        worker: Worker[Any] = Worker(
            queue,
            [("noop", noop)],
            concurrency=10,
            burst=True,
            dequeue_timeout=0.2,
            timers={"sweep": 2},
        )
        started = time.perf_counter()
        await worker.start()
        return jobs / (time.perf_counter() - started)
    finally:
        await queue.disconnect()


def throughput(jobs: int, rounds: int) -> tuple[float, float]:
    """Median jobs/s of SAQ's RedisQueue and of SweepSafeRedisQueue, rounds interleaved."""
    import statistics

    rates: dict[bool, list[float]] = {False: [], True: []}
    with redis_server() as url:
        for _ in range(rounds):
            for sweep_safe in (False, True):
                rates[sweep_safe].append(asyncio.run(_drain_rate(url, sweep_safe, jobs)))
    return statistics.median(rates[False]), statistics.median(rates[True])


def main() -> None:
    """Run both scenarios for both variants and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per fresh-broker round")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-broker rounds per variant")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--soak-seconds", type=float, default=20.0)
    parser.add_argument("--soak-period", type=int, default=1, help="sweep period in the soak")
    parser.add_argument(
        "--throughput-jobs", type=int, default=5000, help="jobs per throughput round (0: skip)"
    )
    args = parser.parse_args()
    if args.throughput_jobs:
        plain_rate, safe_rate = throughput(args.throughput_jobs, 5)
        print(
            f"throughput (one worker, concurrency 10, sweep every 2 s, median of 5): "
            f"RedisQueue {plain_rate:,.0f} jobs/s, SweepSafeRedisQueue {safe_rate:,.0f} jobs/s, "
            f"ratio {safe_rate / plain_rate:.3f}",
            flush=True,
        )
    rows = [" | ".join(HEADER), " | ".join("---" for _ in HEADER)]
    with race_app() as (roots, app_dir):
        sys.path.insert(0, app_dir)
        for plain in (True, False):
            variant = "plain SAQ" if plain else "domainjobs"
            total: dict[str, int] = {}
            for _ in range(args.rounds):
                _add(total, fresh_round(plain, args.jobs, args.workers, roots, app_dir))
            rows.append(_row(f"fresh broker x{args.rounds}", variant, total))
            print(rows[-1], flush=True)
        for plain in (True, False):
            variant = "plain SAQ" if plain else "domainjobs"
            tally = soak_round(
                plain, args.soak_seconds, args.soak_period, args.workers, roots, app_dir
            )
            rows.append(
                _row(f"soak {args.soak_seconds:g}s, sweep {args.soak_period}s", variant, tally)
            )
            print(rows[-1], flush=True)
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
