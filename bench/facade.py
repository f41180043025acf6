"""Benchmark the Jobs facade against plain SAQ on the same Redis server, in the same run.

    .venv/bin/python bench/facade.py [--jobs 3000] [--latency-jobs 300]

1. Enqueue throughput: ``Jobs.enqueue(task, **kwargs)`` (signature check, serializer
   check, task defaults, typed handle) vs ``saq.Queue.enqueue(name, **kwargs)``, one at a
   time and 100 in flight; rounds alternate so drift hits both alike. Target ratio >= 0.95.
2. Round trip of a no-op job with a worker running (``python -m domainjobs run`` in its own
   process): ``Jobs.apply`` (woken by SAQ's job notification) vs ``saq.Queue.apply``
   (polls every 0.5 s). Target: p50 < 5 ms.

Prints figures only; nothing is asserted (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saq.queue import Queue  # noqa: E402
from tests.servers import redis_server  # noqa: E402

from domainjobs import Jobs, discover  # noqa: E402
from domainjobs.brokers.urls import queue_from_url  # noqa: E402

TASKS = """
async def noop(ctx) -> None:
    return None

async def add(ctx, a: int, b: int, label: str = "") -> int:
    return a + b
"""


def make_app(folder: Path) -> str:
    jobs = folder / "benchapp" / "domain" / "bench" / "jobs"
    jobs.mkdir(parents=True)
    for package in (folder / "benchapp", folder / "benchapp" / "domain", jobs.parent, jobs):
        (package / "__init__.py").write_text("")
    (jobs / "tasks.py").write_text(textwrap.dedent(TASKS))
    sys.path.insert(0, str(folder))
    return "benchapp.domain"


async def enqueue_rounds(
    jobs: Jobs, queue: Queue, n: int, in_flight: int, rounds: int
) -> dict[str, float]:
    """Facade vs plain SAQ, in alternating rounds: best jobs/s of each, the median of the
    per-round throughput ratios, and the ratio of client CPU seconds per job (the measure
    least disturbed by other processes on the machine)."""
    kwargs = {"a": 1, "b": 2, "label": "x"}

    def facade_call():  # type: ignore[no-untyped-def]
        return jobs.enqueue("bench.add", **kwargs)

    def saq_call():  # type: ignore[no-untyped-def]
        return queue.enqueue("bench.add", **kwargs)

    async def timed(call) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        batches = max(n // in_flight, 1)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            if in_flight == 1:
                await call()
            else:
                await asyncio.gather(*(call() for _ in range(in_flight)))
        done = batches * in_flight
        return done / (time.perf_counter() - wall), (time.process_time() - cpu) / done

    ours, theirs, ratios, cpu_ours, cpu_theirs = [], [], [], [], []
    for index in range(rounds):
        if index % 2:
            plain, plain_cpu = await timed(saq_call)
            facade, facade_cpu = await timed(facade_call)
        else:
            facade, facade_cpu = await timed(facade_call)
            plain, plain_cpu = await timed(saq_call)
        ours.append(facade)
        theirs.append(plain)
        ratios.append(facade / plain)
        cpu_ours.append(facade_cpu)
        cpu_theirs.append(plain_cpu)
    return {
        "facade": max(ours),
        "saq": max(theirs),
        "ratio": statistics.median(ratios),
        "cpu_ratio": statistics.median(cpu_theirs) / statistics.median(cpu_ours),
        "cpu_us_facade": statistics.median(cpu_ours) * 1e6,
        "cpu_us_saq": statistics.median(cpu_theirs) * 1e6,
    }


async def latencies(call, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)]


async def main(args: argparse.Namespace) -> None:
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        roots = make_app(Path(tmp))
        registry = discover(roots)
        queue = queue_from_url(url, "default")
        await queue.connect()
        async with Jobs(registry, url=url) as jobs:
            print(f"saq {__import__('saq').__version__}, Python {sys.version.split()[0]}, {url}")
            print("\n1. enqueue throughput (no worker; best of rounds, jobs/s)")
            for in_flight in (1, 100):
                r = await enqueue_rounds(jobs, queue, args.jobs, in_flight, args.rounds)
                print(
                    f"   {in_flight:>3} in flight: facade {r['facade']:6.0f}/s  saq.Queue.enqueue "
                    f"{r['saq']:6.0f}/s  median ratio {r['ratio']:.3f}  |  client CPU per job "
                    f"{r['cpu_us_facade']:.0f} us vs {r['cpu_us_saq']:.0f} us: "
                    f"ratio {r['cpu_ratio']:.3f}"
                )
            await queue.redis.flushall()  # type: ignore[attr-defined]

            env = {**os.environ, "DOMAINJOBS_URL": url, "DOMAINJOBS_ROOTS": roots}
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "domainjobs",
                    "run",
                    "--app-dir",
                    tmp,
                    "--concurrency",
                    "10",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                await jobs.with_options(wait_timeout=60).apply("bench.noop")  # worker is up
                print("\n2. round trip of a no-op job, worker in its own process (ms)")
                ours = await latencies(lambda: jobs.apply("bench.noop"), args.latency_jobs)
                theirs = await latencies(
                    lambda: queue.apply("bench.noop"), max(20, args.latency_jobs // 15)
                )
                for label, values in (("Jobs.apply", ours), ("saq.Queue.apply", theirs)):
                    print(
                        f"   {label:16} n={len(values):4}  p50 {pct(values, 0.5):7.2f}  "
                        f"p95 {pct(values, 0.95):7.2f}  mean {statistics.fmean(values):7.2f}"
                    )
                print(f"   speed-up at p50: {pct(theirs, 0.5) / pct(ours, 0.5):.0f}x")
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
        await queue.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
