"""No-op job throughput on every broker, domainjobs against plain SAQ in the same run.

Brokers, side by side: the embedded Valkey server (unix socket, append-only file with
``appendfsync everysec``), a Redis-protocol server over TCP (no persistence) and a
throwaway PostgreSQL cluster. On each, rounds alternate (A B A B ...) between

- plain SAQ: a hand-written ``saq.Worker`` on SAQ's own queue class, and
- domainjobs: ``domainjobs.build_worker`` on the queue ``domainjobs.brokers.urls`` builds,

each round filling the queue with N no-op jobs and timing one worker (concurrency 10) from
start until 95 % of them are done (plain SAQ loses a couple of jobs to its first sweep,
). The medians and their ratio are printed; nothing is asserted.

Usage (from the repository root)::

    .venv/bin/python bench/brokers.py
    .venv/bin/python bench/brokers.py --jobs 5000 --rounds 5 --brokers embedded,tcp
    .venv/bin/python bench/brokers.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.servers: throwaway redis-server and PostgreSQL
from probe import PROBE_SOURCE  # noqa: E402  (bench/probe.py)

PROBE = PROBE_SOURCE

TASKS = """
from djbench_brokers import probe

async def noop(ctx):
    probe.hit()
"""


def make_app(base: Path) -> None:
    """``djbench_brokers.domain.bench.jobs.tasks.noop`` on disk, importable from ``base``."""
    package = base / "djbench_brokers"
    jobs = package / "domain" / "bench" / "jobs"
    jobs.mkdir(parents=True)
    for folder in (package, package / "domain", jobs.parent, jobs):
        (folder / "__init__.py").write_text("")
    (package / "probe.py").write_text(textwrap.dedent(PROBE))
    (jobs / "tasks.py").write_text(textwrap.dedent(TASKS))
    sys.path.insert(0, str(base))


# -- the two queues of a round -------------------------------------------------------------


def plain_queue(url: str) -> Any:
    """SAQ's own queue class for ``url`` (SAQ's from_url rejects unix://: built by hand)."""
    from saq import Queue

    if url.startswith("unix://"):
        import redis.asyncio as aioredis
        from saq.queue.redis import RedisQueue

        return RedisQueue(aioredis.Redis(unix_socket_path=url[len("unix://") :]), name="default")
    if url.startswith("postgres"):
        from saq.queue.postgres import PostgresQueue

        return PostgresQueue.from_url(url, name="default")
    return Queue.from_url(url, name="default")


async def clear(url: str) -> None:
    """Empty the broker between rounds."""
    if url.startswith("postgres"):
        import psycopg

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                await conn.execute("TRUNCATE saq_jobs")
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                await conn.execute("TRUNCATE saq_stats")
        return
    from domainjobs.brokers.urls import queue_from_url

    queue = queue_from_url(url, "default")
    await queue.redis.flushdb()  # type: ignore[attr-defined]
    await queue.redis.aclose()  # type: ignore[attr-defined]


async def one_round(kind: str, url: str, jobs: int, concurrency: int) -> float:
    """Fill the queue with ``jobs`` no-op jobs, run one worker, return jobs/s to 95 %."""
    from saq import Worker

    import domainjobs
    from domainjobs.brokers.urls import queue_from_url

    probe = importlib.import_module("djbench_brokers.probe")
    tasks = importlib.import_module("djbench_brokers.domain.bench.jobs.tasks")
    await clear(url)
    filler = plain_queue(url)
    await filler.connect()
    name = "bench.noop" if kind == "domainjobs" else "noop"
    for start in range(0, jobs, 500):
        await asyncio.gather(*(filler.enqueue(name) for _ in range(min(500, jobs - start))))
    await filler.disconnect()
    target = int(jobs * 0.95)
    done = asyncio.Event()
    probe.reset(target, done)
    if kind == "domainjobs":
        registry = domainjobs.discover("djbench_brokers.domain", entry_points=False)
        worker = domainjobs.build_worker(
            registry,
            queue=queue_from_url(url, "default"),
            concurrency=concurrency,
            dequeue_timeout=1.0,
        )
    else:
        # dequeue_timeout: SAQ 0.26.4's PostgresQueue.dequeue swallows CancelledError, so an
        # idle slot only notices the stop when its dequeue times out
        worker = Worker(
            plain_queue(url), functions=[tasks.noop], concurrency=concurrency, dequeue_timeout=1.0
        )
    await worker.queue.connect()
    worker.SIGNALS = []
    started = time.perf_counter()
    runner = asyncio.create_task(worker.start())
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker.stop(), 30)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, 30)
        await worker.queue.disconnect()
    return target / (probe.times[target - 1] - started)


def measure(url: str, jobs: int, rounds: int, concurrency: int) -> dict[str, Any]:
    """Interleaved rounds on one broker; per-round rates, medians and the ratio."""
    rates: dict[str, list[float]] = {"saq": [], "domainjobs": []}
    asyncio.run(one_round("saq", url, min(jobs, 200), concurrency))  # warm-up (schema, imports)
    for _ in range(rounds):
        for kind in ("saq", "domainjobs"):
            rates[kind].append(asyncio.run(one_round(kind, url, jobs, concurrency)))
            print(f"  {kind}: {rates[kind][-1]:.0f} jobs/s", file=sys.stderr, flush=True)
    saq, ours = statistics.median(rates["saq"]), statistics.median(rates["domainjobs"])
    return {"rounds": rates, "saq": saq, "domainjobs": ours, "ratio": ours / saq}


# -- the three brokers ---------------------------------------------------------------------


@contextlib.contextmanager
def embedded() -> Iterator[str]:
    """The embedded broker in a throwaway data folder."""
    from domainjobs.brokers.embedded import BrokerPaths, ensure_broker, stop_broker

    folder = Path(tempfile.mkdtemp(prefix="dj-bench-embedded-"))
    paths = BrokerPaths(folder / "broker")
    try:
        yield ensure_broker(paths).url
    finally:
        stop_broker(paths)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def tcp() -> Iterator[str]:
    """A Redis-protocol server on a free TCP port (the bundled binary when installed)."""
    from tests.servers import redis_server

    with redis_server() as url:
        yield url


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb; fsync off, as a test cluster)."""
    from tests.servers import postgres_server

    with postgres_server() as url:
        yield url


BROKERS: dict[str, Callable[[], contextlib.AbstractContextManager[str]]] = {
    "embedded": embedded,
    "tcp": tcp,
    "postgres": postgres,
}


def main() -> None:
    """Run the benchmark and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per round (Redis)")
    parser.add_argument("--pg-jobs", type=int, default=1000, help="jobs per round (PostgreSQL)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind per broker")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--brokers", default="embedded,tcp,postgres")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="dj-bench-app-") as base:
        make_app(Path(base))
        results = {}
        for name in args.brokers.split(","):
            jobs = args.pg_jobs if name == "postgres" else args.jobs
            print(f"{name}: {jobs} jobs x {args.rounds} rounds", file=sys.stderr, flush=True)
            with BROKERS[name]() as url:
                results[name] = {"jobs": jobs, **measure(url, jobs, args.rounds, args.concurrency)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"no-op jobs/s, one worker, concurrency {args.concurrency}, median of {args.rounds}")
    print(f"{'broker':<10} {'jobs':>6} {'plain SAQ':>10} {'domainjobs':>11} {'ratio':>6}  spread")
    for name, row in results.items():
        spread = "  ".join(
            f"{kind} {min(row['rounds'][kind]):.0f}-{max(row['rounds'][kind]):.0f}"
            for kind in ("saq", "domainjobs")
        )
        print(
            f"{name:<10} {row['jobs']:>6} {row['saq']:>10.0f} {row['domainjobs']:>11.0f} "
            f"{row['ratio']:>6.2f}  {spread}"
        )


if __name__ == "__main__":
    main()
