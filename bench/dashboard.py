"""Dashboard benchmarks: what the trend counters cost the workers, how fast the overview
page is with a big registry and a busy hour, and how much broker memory trend data takes.

1. counters: CPU per job of a no-op task through ``domainjobs.build_worker`` with the trend
   counters (as shipped) and without them (the hook taken off the same worker), on the same
   Redis server, in one process, rounds interleaved (A B, B A, ...): medians and the ratio
   printed (target: the counters cost <= 2 % of the CPU per job).
2. overview: server time of ``GET /`` (uvicorn on loopback, timed by the client) for a
   generated app of 200 tasks on 4 queues, with 10,000 finished jobs in the last hour written
   straight into Redis (the job records and the trend buckets the workers would have
   written), plus 100 waiting jobs per queue (target < 300 ms).
3. memory: broker memory of the trend data of 200 tasks at steady state, every task
   running every minute (the worst case): 3 hours of minute buckets and 26 hours of
   quarter-hour buckets, as ``INFO memory`` before/after and the sum of ``MEMORY USAGE``.

Usage (from the repository root)::

    .venv/bin/python bench/dashboard.py                  # all three, its own redis-server
    .venv/bin/python bench/dashboard.py counters --jobs 10000 --rounds 9
    .venv/bin/python bench/dashboard.py overview --requests 30
    .venv/bin/python bench/dashboard.py memory --tasks 200

Nothing is asserted: the script prints figures. ``--url`` must point at a database you can
flush (the script runs FLUSHDB on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers: the suite's throwaway redis-server
sys.path.insert(0, str(HERE))

from core import _fill, make_throughput_app  # noqa: E402  (bench/core.py)
from tests.servers import free_port, redis_server, wait_for  # noqa: E402

# -- 1. counters -------------------------------------------------------------------------------

KINDS = ("without", "with")


def _without_trends(worker: Any) -> None:
    """Take the trend counters off a worker built by domainjobs."""
    from domainjobs.runtime.trends import TrendRecorder

    def ours(hook: Any) -> bool:
        return isinstance(getattr(hook, "__self__", None), TrendRecorder)

    worker.after_process = [h for h in worker.after_process or [] if not ours(h)] or None
    worker.shutdown = [h for h in worker.shutdown or [] if not ours(h)]


async def _timed_run(
    kind: str, url: str, jobs: int, concurrency: int, profiler: Any = None
) -> dict[str, float]:
    """One round: fill the queue, run one worker until 95% of the jobs are done (with
    ``profiler`` enabled from the worker's start to that point, if given)."""
    import domainjobs

    probe = importlib.import_module("djbench_tp.probe")
    await _fill(url, "bench.noop", jobs)
    target = int(jobs * 0.95)
    done = asyncio.Event()
    probe.reset(target, done)
    registry = domainjobs.discover("djbench_tp.domain", entry_points=False)
    worker = domainjobs.build_worker(registry, queue="default", url=url, concurrency=concurrency)
    if kind == "without":
        _without_trends(worker)
    worker.SIGNALS = []
    await worker.queue.connect()
    if profiler is not None:
        profiler.enable()
    cpu_started = time.process_time()
    started = time.perf_counter()
    runner = asyncio.create_task(worker.start())
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
        cpu = time.process_time() - cpu_started
        wall = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
    finally:
        await worker.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, timeout=60)
        await worker.queue.disconnect()
    return {"cpu_us": cpu / target * 1e6, "rate": target / wall}


async def _hook_cost(url: str, calls: int, per_flush: int) -> float:
    """CPU microseconds per job of the real hook on real jobs, plus one real flush (one
    round trip) every ``per_flush`` jobs, as a worker doing ``per_flush`` jobs/s does."""
    from saq import Queue
    from saq.job import Job, Status

    from domainjobs.runtime.trends import recorder_for

    queue = Queue.from_url(url, name="default")
    await queue.connect()
    recorder = recorder_for(queue)
    assert recorder is not None
    now = int(time.time() * 1000)
    jobs = [
        Job("bench.noop", status=Status.COMPLETE, queued=now - 9, started=now - 5, completed=now)
        for _ in range(1000)
    ]
    contexts = [{"job": job} for job in jobs]
    started = time.process_time()
    for index in range(calls):
        await recorder.after_process(contexts[index % 1000])
        if index % per_flush == per_flush - 1:
            await recorder.flush()
    cpu = time.process_time() - started
    await recorder.close()
    await queue.disconnect()
    return cpu / calls * 1e6


def _calls_per_job(url: str, jobs: int, concurrency: int, repeats: int = 3) -> dict[str, float]:
    """Python function calls per job of each variant, counted by cProfile (median of
    ``repeats`` rounds each): a figure that does not move with the machine's load."""
    import cProfile
    import pstats

    calls: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(repeats):
        for kind in KINDS:
            profiler = cProfile.Profile()
            asyncio.run(_timed_run(kind, url, jobs, concurrency, profiler))
            stats = pstats.Stats(profiler)
            calls[kind].append(stats.total_calls / int(jobs * 0.95))  # type: ignore[attr-defined]
    return {kind: statistics.median(found) for kind, found in calls.items()}


def counters(url: str, jobs: int, rounds: int, concurrency: int) -> dict[str, Any]:
    """Interleave with/without round by round; medians and the cost of the counters."""
    import logging

    logging.getLogger("saq").setLevel(logging.ERROR)
    logging.getLogger("domainjobs").setLevel(logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="dj-bench-dash-"))
    make_throughput_app(base)
    sys.path.insert(0, str(base))
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    try:
        for kind in KINDS:  # warm-up
            asyncio.run(_timed_run(kind, url, min(jobs, 1000), concurrency))
        for index in range(rounds):
            order = KINDS if index % 2 == 0 else KINDS[::-1]
            for kind in order:
                runs[kind].append(asyncio.run(_timed_run(kind, url, jobs, concurrency)))
            line = "   ".join(
                f"{k} {runs[k][-1]['cpu_us']:5.1f} us ({runs[k][-1]['rate']:5.0f}/s)" for k in KINDS
            )
            print(f"  round {index + 1}/{rounds}, CPU per job: {line}", flush=True)
        rate = statistics.median(r["rate"] for r in runs["with"])
        calls = _calls_per_job(url, jobs, concurrency)  # needs the generated app
        hook = statistics.median(
            asyncio.run(_hook_cost(url, 100_000, max(1, int(rate)))) for _ in range(5)
        )
    finally:
        sys.path.remove(str(base))
        shutil.rmtree(base, ignore_errors=True)
    without = statistics.median(r["cpu_us"] for r in runs["without"])
    with_ = statistics.median(r["cpu_us"] for r in runs["with"])
    pairs = [
        w["cpu_us"] / wo["cpu_us"] for wo, w in zip(runs["without"], runs["with"], strict=True)
    ]
    return {
        "jobs": jobs,
        "rounds": rounds,
        "concurrency": concurrency,
        "cpu_us_without": without,
        "cpu_us_with": with_,
        "cost_ratio_of_medians": with_ / without - 1,
        "cost_median_pair": statistics.median(pairs) - 1,
        "rate_without": statistics.median(r["rate"] for r in runs["without"]),
        "rate_with": rate,
        "hook_us": hook,
        "calls_per_job": calls,
        "hook_share": hook / without,
        "runs": runs,
    }


def print_counters(result: dict[str, Any]) -> None:
    """The counters table."""
    print(
        f"\nno-op task, {result['jobs']} jobs per round, concurrency {result['concurrency']}, "
        f"{result['rounds']} interleaved rounds, medians:"
    )
    print(f"  without trend counters: {result['cpu_us_without']:6.1f} us CPU/job")
    print(f"  with trend counters:    {result['cpu_us_with']:6.1f} us CPU/job")
    print(
        f"  cost of the counters: {result['cost_ratio_of_medians'] * 100:+.2f} % (ratio of "
        f"medians), {result['cost_median_pair'] * 100:+.2f} % (median of per-round ratios); "
        "target <= 2 %"
    )
    calls = result["calls_per_job"]
    print(
        f"  Python function calls per job (cProfile, median of 3 rounds each): without "
        f"{calls['without']:.0f}, with {calls['with']:.0f} "
        f"({(calls['with'] / calls['without'] - 1) * 100:+.2f} %)"
    )
    print(
        f"  the hook alone (100,000 real jobs, a real flush every {result['rate_with']:.0f} "
        f"jobs = once a second at this rate), median of 5: {result['hook_us']:.2f} us/job = "
        f"{result['hook_share'] * 100:.2f} % of the CPU per job without it"
    )
    print(
        f"  jobs/s: without {result['rate_without']:.0f}, with {result['rate_with']:.0f}\n"
        "  CPU is this process's (the worker's), per job, from the worker's start to 95% done;\n"
        "  on a shared machine the rounds scatter by several %, the hook's own cost does not."
    )


# -- 2. overview -------------------------------------------------------------------------------

QUEUES = ("q0", "q1", "q2", "q3")


def make_big_app(base: Path, tasks: int, per_domain: int = 10) -> str:
    """``djbench_dash.domain``: ``tasks`` tasks in domains of ``per_domain``, each domain
    on one of 4 queues; returns the roots."""
    package = base / "djbench_dash"
    for folder in (package, package / "domain"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    for d in range(tasks // per_domain):
        jobs = package / "domain" / f"d{d:03d}" / "jobs"
        jobs.mkdir(parents=True)
        (jobs.parent / "__init__.py").write_text("")
        (jobs / "__init__.py").write_text(f'job_defaults = {{"queue": "{QUEUES[d % 4]}"}}\n')
        source = "".join(
            f"async def task_{t:02d}(ctx, n: int = 0) -> int:\n    return n\n\n\n"
            for t in range(per_domain)
        )
        (jobs / "tasks.py").write_text(textwrap.dedent(source))
    return "djbench_dash.domain"


async def _fill_history(url: str, registry: Any, finished: int, waiting: int) -> None:
    """``finished`` finished jobs over the last hour (records + trend buckets) and
    ``waiting`` queued jobs per queue, written straight into Redis."""
    import redis.asyncio as aioredis
    from saq import Queue
    from saq.job import Job, Status

    from domainjobs.runtime.trends import RESOLUTIONS, add_rows, job_row
    from domainjobs.runtime.trendstore import RedisTrendStore

    client = aioredis.from_url(url)
    await client.flushdb()
    rng = random.Random(1)
    specs = list(registry.tasks.values())
    now = time.time()
    buckets: dict[str, dict[str, dict[int, dict[str, list[int]]]]] = {}
    pipe = client.pipeline(transaction=False)
    queues = {name: Queue.from_url(url, name=name) for name in QUEUES}
    for i in range(finished):
        spec = specs[i % len(specs)]
        ended = now - rng.uniform(0, 3590)
        started = ended - rng.lognormvariate(-3, 1)
        status = Status.FAILED if rng.random() < 0.03 else Status.COMPLETE
        job = Job(
            spec.name,
            queue=queues[spec.queue],
            kwargs={"n": i},
            status=status,
            attempts=1,
            queued=int((started - rng.uniform(0, 0.2)) * 1000),
            started=int(started * 1000),
            completed=int(ended * 1000),
            error="RuntimeError: made up" if status == Status.FAILED else None,
        )
        pipe.setex(job.id, 3600, queues[spec.queue].serialize(job))
        row = job_row(job)
        assert row is not None
        for resolution in RESOLUTIONS:
            bucket = (
                buckets.setdefault(spec.queue, {})
                .setdefault(resolution.name, {})
                .setdefault(resolution.start(ended), {})
            )
            if spec.name in bucket:
                add_rows(bucket[spec.name], row)
            else:
                bucket[spec.name] = list(row)
    await pipe.execute()
    for name, queue in queues.items():
        await queue.connect()
        for _ in range(waiting):
            await queue.enqueue(specs[rng.randrange(len(specs))].name, n=1)
        store = RedisTrendStore(queue)  # type: ignore[arg-type]
        await store.add(name, buckets.get(name, {}), {})
        await queue.disconnect()
    await client.aclose()


def overview(url: str, tasks: int, finished: int, waiting: int, requests: int) -> dict[str, Any]:
    """Median/p95 time of GET / (and of the overview's data alone) over ``requests``."""
    import logging

    import uvicorn

    import domainjobs
    from domainjobs.web import create_app

    logging.getLogger("domainjobs").setLevel(logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="dj-bench-dash-"))
    sys.path.insert(0, str(base))
    try:
        roots = make_big_app(base, tasks)
        registry = domainjobs.discover(roots, entry_points=False)
        asyncio.run(_fill_history(url, registry, finished, waiting))
        app = create_app(registry, url, password="")
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=30, what="uvicorn")
        root = f"http://127.0.0.1:{port}"
        pages = {"1h": root + "/", "24h": root + "/?window=24h", "jobs": root + "/jobs"}
        timings: dict[str, dict[str, list[float]]] = {}
        try:
            for label, page in pages.items():
                found = timings[label] = {"times": [], "sizes": [], "built": []}
                for index in range(requests + 3):
                    started = time.perf_counter()
                    with urllib.request.urlopen(page, timeout=30) as response:
                        body = response.read()
                    elapsed = (time.perf_counter() - started) * 1000
                    if index >= 3:  # warm-up: connections, template compilation
                        found["times"].append(elapsed)
                        found["sizes"].append(len(body))
                        if b"page built in " in body:
                            built = body.split(b"page built in ")[1].split(b" ms")[0]
                            found["built"].append(float(built))
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        sys.path.remove(str(base))
        shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {
        "tasks": tasks,
        "queues": len(QUEUES),
        "finished": finished,
        "waiting_per_queue": waiting,
        "requests": requests,
    }
    for label, found in timings.items():
        times = sorted(found["times"])
        result[label] = {
            "median_ms": statistics.median(times),
            "p95_ms": times[int(len(times) * 0.95) - 1],
            "data_median_ms": statistics.median(found["built"] or [0.0]),
            "page_kb": statistics.median(found["sizes"]) / 1024,
        }
    return result


def print_overview(result: dict[str, Any]) -> None:
    """The overview figures."""
    print(
        f"\nGET / with {result['tasks']} tasks on {result['queues']} queues, "
        f"{result['finished']:,} finished jobs in the last hour, "
        f"{result['waiting_per_queue']} waiting per queue, {result['requests']} requests:"
    )
    for label in ("1h", "24h"):
        row = result[label]
        print(
            f"  window {label:>3}: server time (client-timed, loopback) median "
            f"{row['median_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms (target < 300 ms); "
            f"reading the broker and summing: median {row['data_median_ms']:.0f} ms; "
            f"page {row['page_kb']:.0f} KiB"
        )
    row = result["jobs"]
    print(
        f"  /jobs (the newest failed jobs: walks all {result['finished']:,} job records): "
        f"median {row['median_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms"
    )


# -- 3. memory ---------------------------------------------------------------------------------


async def _memory(url: str, tasks: int) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from saq import Queue

    from domainjobs.runtime.trends import HIST, MINUTE, QUARTER, histogram_index, new_row
    from domainjobs.runtime.trendstore import RedisTrendStore

    client = aioredis.from_url(url)
    await client.flushdb()
    rng = random.Random(2)
    names = [f"d{t // 10:03d}.task_{t % 10:02d}" for t in range(tasks)]
    per_queue = {q: names[i::4] for i, q in enumerate(QUEUES)}
    now = time.time()
    for queue_name, queue_tasks in per_queue.items():
        queue = Queue.from_url(url, name=queue_name)
        await queue.connect()
        store = RedisTrendStore(queue)  # type: ignore[arg-type]
        for resolution, keep in ((MINUTE, MINUTE.keep), (QUARTER, QUARTER.keep)):
            count = keep // resolution.seconds
            scale = resolution.seconds // 60
            for i in range(count):
                start = resolution.start(now) - i * resolution.seconds
                rows = {}
                for task in queue_tasks:
                    row = new_row()
                    done = rng.randint(5, 60) * scale
                    row[0], row[1], row[2] = done, rng.randint(0, 2), rng.randint(0, 2)
                    row[4], row[5] = done * rng.randint(5, 500), done * rng.randint(1, 80)
                    for _ in range(4):  # a few histogram buckets in use
                        row[HIST + histogram_index(rng.randint(1, 3000))] += done // 4
                    rows[task] = row
                await store.add(queue_name, {resolution.name: {start: rows}}, {})
        await queue.disconnect()
    keys = [key async for key in client.scan_iter(match="domainjobs:trends:*", count=1000)]
    usage = 0
    for key in keys:
        usage += int(await client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0"))
    # used_memory with the keys, then without them (deleted synchronously): the difference
    # is what they take, whatever the allocator kept from earlier work
    with_keys = int((await client.info("memory"))["used_memory"])
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start : start + 500])
    without_keys = int((await client.info("memory"))["used_memory"])
    info = await client.info("server")
    await client.aclose()
    return {
        "tasks": tasks,
        "keys": len(keys),
        "memory_usage_sum": usage,
        "used_memory_delta": with_keys - without_keys,
        "server": f"{info.get('server_name', 'redis')} {info.get('redis_version')}",
    }


def memory(url: str, tasks: int) -> dict[str, Any]:
    """Broker memory of a steady state of trend data for ``tasks`` tasks."""
    return asyncio.run(_memory(url, tasks))


def print_memory(result: dict[str, Any]) -> None:
    """The memory figures."""
    print(
        f"\ntrend data of {result['tasks']} tasks on 4 queues, every task active every "
        f"minute (worst case), steady state (3 h of minute + 26 h of quarter-hour buckets), "
        f"{result['server']}:"
    )
    print(
        f"  {result['keys']} keys; MEMORY USAGE sum {result['memory_usage_sum'] / 2**20:.1f} MiB;"
        f" INFO used_memory with them - without them {result['used_memory_delta'] / 2**20:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("all", "counters", "overview", "memory"),
                        default="all")  # fmt: skip
    parser.add_argument("--url", help="a Redis database you can flush (default: start one)")
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--finished", type=int, default=10000)
    parser.add_argument("--waiting", type=int, default=100)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(redis_server())
        if args.what in ("all", "counters"):
            results["counters"] = counters(url, args.jobs, args.rounds, args.concurrency)
            print_counters(results["counters"])
        if args.what in ("all", "overview"):
            results["overview"] = overview(
                url, args.tasks, args.finished, args.waiting, args.requests
            )
            print_overview(results["overview"])
        if args.what in ("all", "memory"):
            results["memory"] = memory(url, args.tasks)
            print_memory(results["memory"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
