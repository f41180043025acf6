"""cProfile of the per-call paths: ``Jobs.enqueue`` vs ``saq.Queue.enqueue``, and
``Jobs.apply`` with a worker in the same process (calls per operation, top functions).

    .venv/bin/python bench/profile_paths.py [--n 2000] [--top 25] [--what enqueue,apply]

Nothing is asserted; it prints cProfile tables (call counts do not move with load).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import redis_server  # noqa: E402

TASKS = """
async def noop(ctx) -> None:
    return None

async def add(ctx, a: int, b: int = 0) -> int:
    return a + b
"""


def make_app(folder: Path) -> str:
    jobs = folder / "profapp" / "domain" / "bench" / "jobs"
    jobs.mkdir(parents=True)
    for package in (folder / "profapp", folder / "profapp" / "domain", jobs.parent, jobs):
        (package / "__init__.py").write_text("")
    (jobs / "tasks.py").write_text(textwrap.dedent(TASKS))
    sys.path.insert(0, str(folder))
    return "profapp.domain"


def report(title: str, profiler: cProfile.Profile, count: int, top: int) -> None:
    stats = pstats.Stats(profiler)
    total = stats.total_calls  # type: ignore[attr-defined]
    tt = stats.total_tt  # type: ignore[attr-defined]
    print(f"\n== {title}: {total / count:.0f} calls, {tt / count * 1e6:.0f} us (profiled) per op")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    for (file, line, func), (_cc, calls, own, cum, _) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}:{func}"
        print(f"  {calls / count:6.2f}/op {own / count * 1e6:7.2f} us own", end="")
        print(f" {cum / count * 1e6:8.2f} us cum  {where}")
    ours = [
        (cum, own, calls, f"{Path(file).name}:{line}:{func}")
        for (file, line, func), (_cc, calls, own, cum, _) in stats.stats.items()  # type: ignore[attr-defined]
        if "/domainjobs/" in file
    ]
    own_total = sum(own for _, own, _, _ in ours)
    print(f"  domainjobs' own time: {own_total / count * 1e6:.1f} us per op ({own_total / tt:.1%})")
    for cum, own, calls, where in sorted(ours, reverse=True)[: top // 2]:
        print(f"    {calls / count:6.2f}/op {own / count * 1e6:7.2f} us own", end="")
        print(f" {cum / count * 1e6:8.2f} us cum  {where}")


async def main(args: argparse.Namespace) -> None:
    from saq import Queue

    from domainjobs import Jobs, discover
    from domainjobs.lifespan import in_process_workers

    what = set(args.what.split(","))
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        roots = make_app(Path(tmp))
        registry = discover(roots, entry_points=False)
        queue = Queue.from_url(url, name="default")
        await queue.connect()
        async with Jobs(registry, url=url) as jobs:
            for _ in range(200):  # warm up both paths
                await jobs.enqueue("bench.add", a=1, b=2)
                await queue.enqueue("bench.add", a=1, b=2)
            if "enqueue" in what:
                for title, call in (
                    ("saq.Queue.enqueue", lambda: queue.enqueue("bench.add", a=1, b=2)),
                    ("Jobs.enqueue", lambda: jobs.enqueue("bench.add", a=1, b=2)),
                ):
                    started = time.perf_counter()
                    for _ in range(args.n):
                        await call()
                    plain = (time.perf_counter() - started) / args.n * 1e6
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for _ in range(args.n):
                        await call()
                    profiler.disable()
                    print(f"\n{title}: {plain:.0f} us per call unprofiled (wall)")
                    report(title, profiler, args.n, args.top)
            if "apply" in what:
                await queue.redis.flushall()  # type: ignore[attr-defined]
                async with in_process_workers(registry, url=url):
                    for _ in range(50):
                        await jobs.apply("bench.noop")
                    times = []
                    for _ in range(args.n // 4):
                        started = time.perf_counter()
                        await jobs.apply("bench.noop")
                        times.append((time.perf_counter() - started) * 1000)
                    times.sort()
                    print(f"\nJobs.apply, in-process worker: p50 {times[len(times) // 2]:.2f} ms")
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for _ in range(args.n // 4):
                        await jobs.apply("bench.noop")
                    profiler.disable()
                    report("Jobs.apply + in-process worker", profiler, args.n // 4, args.top)
        await queue.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--what", default="enqueue,apply")
    asyncio.run(main(parser.parse_args()))
