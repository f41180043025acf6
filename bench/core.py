"""Core benchmarks of domainjobs, measured against plain SAQ in the same run.

1. throughput: jobs/s of a no-op task through ``domainjobs.build_worker`` (started with
   ``worker.start()``, and run by ``domainjobs.run_workers`` as ``run`` does) against a
   hand-written ``saq.Worker`` on the same Redis server, in one process, rounds interleaved
   (A B C, B C A, ...): medians and ratios printed (target >= 0.97).
2. discovery: ``discover()`` plus ``build_workers()`` for a generated tree of N domains with
   all four jobs modules each, in a fresh interpreter per measurement, against the bare cost
   of importing the very same modules (target: linear, < 300 ms beyond imports at 200).

Usage (from the repository root)::

    .venv/bin/python bench/core.py                       # both, starts its own redis-server
    .venv/bin/python bench/core.py throughput --jobs 10000 --rounds 9
    .venv/bin/python bench/core.py discovery --domains 50,200,1000 --repeats 5
    .venv/bin/python bench/core.py discovery --domains 1000 --profile   # where the time goes
    .venv/bin/python bench/core.py throughput --url redis://127.0.0.1:6379/15   # your server

Nothing is asserted: the script prints figures. ``--url`` must point at a database you can
flush (the script runs FLUSHDB on it between rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers: the suite's throwaway redis-server

from probe import PROBE_SOURCE  # noqa: E402  (bench/probe.py)
from tests.servers import redis_server  # noqa: E402

# -- 1. throughput ---------------------------------------------------------------------------

PROBE = PROBE_SOURCE

NOOP_TASKS = '''
"""The benchmark's no-op task (unmarked: the public function of the module is the task)."""
from djbench_tp import probe


async def noop(ctx):
    probe.hit()
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def make_throughput_app(base: Path) -> None:
    """``djbench_tp.domain.bench.jobs.tasks.noop``: one domain, one no-op task."""
    for folder in (
        "djbench_tp",
        "djbench_tp/domain",
        "djbench_tp/domain/bench",
        "djbench_tp/domain/bench/jobs",
    ):
        _write(base / folder / "__init__.py", "")
    _write(base / "djbench_tp/probe.py", PROBE)
    _write(base / "djbench_tp/domain/bench/jobs/tasks.py", NOOP_TASKS)


async def _fill(url: str, function: str, count: int) -> None:
    """FLUSHDB, then enqueue ``count`` jobs of ``function`` with a plain saq client."""
    import redis.asyncio as aioredis
    from saq import Queue

    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    queue = Queue.from_url(url, name="default")
    await queue.connect()
    batch = 500
    for start in range(0, count, batch):
        await asyncio.gather(*(queue.enqueue(function) for _ in range(min(batch, count - start))))
    await queue.disconnect()


#: the variants measured, in the order of the first round (later rounds rotate it)
KINDS_TP = ("saq", "build_worker", "run_workers")

KIND_HELP = {
    "saq": "a hand-written saq.Worker(Queue.from_url(url), functions=[noop])",
    "build_worker": "domainjobs.build_worker(registry, url=url), started with worker.start()",
    "run_workers": "the same worker run by domainjobs.run_workers (what `run` does)",
}


async def _timed_run(
    kind: str, url: str, jobs: int, concurrency: int, profiler: Any = None
) -> dict[str, float]:
    """One round: fill the queue, run one worker until 95% of the jobs are done (with
    ``profiler`` enabled from the worker's start to that point, if given)."""
    from saq import Queue, Worker

    import domainjobs

    probe = importlib.import_module("djbench_tp.probe")
    tasks = importlib.import_module("djbench_tp.domain.bench.jobs.tasks")
    await _fill(url, "noop" if kind == "saq" else "bench.noop", jobs)
    # plain SAQ loses ~2 jobs to the first sweep of a worker: stop at 95%
    target = int(jobs * 0.95)
    done = asyncio.Event()
    probe.reset(target, done)
    if kind == "saq":
        worker = Worker(
            Queue.from_url(url, name="default"), functions=[tasks.noop], concurrency=concurrency
        )
    else:
        registry = domainjobs.discover("djbench_tp.domain", entry_points=False)
        worker = domainjobs.build_worker(
            registry, queue="default", url=url, concurrency=concurrency
        )
    worker.SIGNALS = []
    runner: asyncio.Task[Any]
    if profiler is not None:
        profiler.enable()
    cpu_started = time.process_time()
    if kind == "run_workers":
        started = time.perf_counter()
        runner = asyncio.create_task(domainjobs.run_workers([worker], handle_signals=False))
    else:
        await worker.queue.connect()
        started = time.perf_counter()
        runner = asyncio.create_task(worker.start())
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
        cpu = time.process_time() - cpu_started
        if profiler is not None:
            profiler.disable()
    finally:
        await worker.stop()
        if kind != "run_workers":
            runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, timeout=60)
        if kind != "run_workers":
            await worker.queue.disconnect()
    times = probe.times
    low, high = len(times) // 10, (len(times) * 9) // 10
    return {
        "total": target / (times[target - 1] - started),
        "steady": (high - low) / (times[high] - times[low]),
        # this process's CPU time per job (the worker's and the probe's; not the server's):
        # insensitive to other processes competing for the machine
        "cpu_us": cpu / target * 1e6,
    }


def throughput(url: str, jobs: int, rounds: int, concurrency: int) -> dict[str, Any]:
    """Interleave the variants round by round; return per-round rates, medians, ratios."""
    import logging

    # stopping a worker cancels its idle dequeues, which saq reports as a warning
    logging.getLogger("saq").setLevel(logging.ERROR)
    logging.getLogger("domainjobs").setLevel(logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="dj-bench-tp-"))
    make_throughput_app(base)
    sys.path.insert(0, str(base))
    rates: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS_TP}
    try:
        for kind in KINDS_TP:  # warm-up: imports, connections, the server's allocator
            asyncio.run(_timed_run(kind, url, min(jobs, 1000), concurrency))
        for index in range(rounds):
            shift = index % len(KINDS_TP)
            order = KINDS_TP[shift:] + KINDS_TP[:shift]
            for kind in order:
                rates[kind].append(asyncio.run(_timed_run(kind, url, jobs, concurrency)))
            line = "   ".join(
                f"{k} {rates[k][-1]['steady']:5.0f} ({rates[k][-1]['cpu_us']:4.0f} us)"
                for k in KINDS_TP
            )
            print(f"  round {index + 1}/{rounds}, jobs/s (CPU/job): {line}", flush=True)
        calls = _calls_per_job(url, jobs, concurrency)
    finally:
        sys.path.remove(str(base))
        shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "concurrency": concurrency}
    result["calls_per_job"] = calls
    for measure in ("steady", "total", "cpu_us"):
        plain = statistics.median(r[measure] for r in rates["saq"])
        row: dict[str, Any] = {"saq": plain}
        for kind in KINDS_TP[1:]:
            ours = statistics.median(r[measure] for r in rates[kind])
            pairs = [
                d[measure] / s[measure] for s, d in zip(rates["saq"], rates[kind], strict=True)
            ]
            if measure == "cpu_us":  # less is better: express as plain/ours like a rate
                ours_ratio = plain / ours
                pairs = [1 / pair for pair in pairs]
            else:
                ours_ratio = ours / plain
            row[kind] = ours
            row[f"{kind}_ratio_of_medians"] = ours_ratio
            row[f"{kind}_median_pair_ratio"] = statistics.median(pairs)
        result[measure] = row
    result["rates"] = rates
    return result


def _calls_per_job(url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """Python function calls per job of each variant, counted by cProfile over one round:
    a figure that does not move with the machine's load."""
    import cProfile
    import pstats

    calls = {}
    for kind in KINDS_TP:
        profiler = cProfile.Profile()
        asyncio.run(_timed_run(kind, url, jobs, concurrency, profiler))
        stats = pstats.Stats(profiler)
        calls[kind] = stats.total_calls / int(jobs * 0.95)  # type: ignore[attr-defined]
    return calls


def print_throughput(result: dict[str, Any]) -> None:
    """The throughput table."""
    print(
        f"\nno-op task, {result['jobs']} jobs per round, concurrency {result['concurrency']}, "
        f"{result['rounds']} interleaved rounds, medians:"
    )
    print(f"  {'variant':<13} {'measure':<7} {'value':>8} {'vs saq':>7} {'pairwise':>9}")
    for measure in ("steady", "total", "cpu_us"):
        row = result[measure]
        print(f"  {'saq':<13} {measure:<7} {row['saq']:8.0f} {1:7.3f} {1:9.3f}")
        for kind in KINDS_TP[1:]:
            print(
                f"  {kind:<13} {measure:<7} {row[kind]:8.0f} "
                f"{row[f'{kind}_ratio_of_medians']:7.3f} {row[f'{kind}_median_pair_ratio']:9.3f}"
            )
    calls = result["calls_per_job"]
    print(
        "  Python function calls per job (cProfile, one round each): "
        + ", ".join(f"{kind} {calls[kind]:.0f}" for kind in KINDS_TP)
        + f" (build_worker/saq {calls['build_worker'] / calls['saq']:.3f})"
    )
    for kind, text in KIND_HELP.items():
        print(f"  {kind}: {text}")
    print(
        "  steady: jobs/s from 10% to 90% of completions; total: jobs/s from worker start to\n"
        "  95% done; cpu_us: this process's CPU microseconds per job (vs saq: saq's / ours).\n"
        "  vs saq: ratio of the medians; pairwise: median of the per-round ratios (robust to\n"
        "  load drifting between rounds). Above 1 is faster than plain SAQ; target >= 0.97."
    )


# -- 2. discovery ------------------------------------------------------------------------------

GEN_INIT_WITH_DEFAULTS = 'job_defaults = {"queue": "%s", "retries": 2, "timeout": 30}\n'

GEN_TASKS = '''
"""Tasks of domain {n}: two unmarked public functions, a private helper."""


async def create_{n}(ctx, item_id: int) -> int:
    return item_id


def count_{n}(ctx) -> int:
    return 0


def _helper(value: int) -> int:
    return value
'''

GEN_SCHEDULED = '''
"""Cron jobs of domain {n}: one @cron, one CronJob, one helper."""
from saq import CronJob

from domainjobs import cron


@cron("{minute} * * * *", timeout=60)
async def sweep_{n}(ctx) -> None:
    return None


async def nightly_{n}(ctx) -> None:
    return None


def helper_{n}() -> None:
    return None


scheduled_tasks = [CronJob(nightly_{n}, cron="{minute} {hour} * * *")]
'''

GEN_STARTUP = """
def open_{n}(ctx):
    ctx["{n}"] = True
"""

GEN_SHUTDOWN = """
def close_{n}(ctx):
    ctx.pop("{n}", None)
"""


KINDS = ("tasks", "scheduled", "startup", "shutdown")


def make_tree(base: Path, package: str, domains: int) -> list[str]:
    """Generate ``package.domain`` with ``domains`` domains; return every module name that
    discovery imports, in the order it imports them."""
    _write(base / package / "__init__.py", "")
    _write(base / package / "domain" / "__init__.py", "")
    modules = [package, f"{package}.domain"]
    for index in range(domains):
        name = f"d{index:04d}"
        root = base / package / "domain" / name
        jobs = root / "jobs"
        _write(root / "__init__.py", "")
        init = GEN_INIT_WITH_DEFAULTS % f"q{index % 4}" if index % 2 else ""
        _write(jobs / "__init__.py", init)
        _write(jobs / "tasks.py", GEN_TASKS.format(n=name))
        _write(
            jobs / "scheduled.py",
            GEN_SCHEDULED.format(n=name, minute=index % 60, hour=(index // 60) % 24),
        )
        _write(jobs / "startup.py", GEN_STARTUP.format(n=name))
        _write(jobs / "shutdown.py", GEN_SHUTDOWN.format(n=name))
        dotted = f"{package}.domain.{name}"
        modules += [dotted, f"{dotted}.jobs"]
        modules += [f"{dotted}.jobs.{kind}" for kind in KINDS]
    return modules


#: CPU time of the measuring process (default: steady on a busy machine, as discovery is
#: CPU-bound once the files are in the page cache) or wall-clock time
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}

#: what a worker process imports anyway (a lazily imported broker client included)
LIBRARIES = (
    "croniter",
    "saq",
    "saq.queue.redis",
    "redis.asyncio",
    "domainjobs",
    "domainjobs.cli",
    "domainjobs.brokers.urls",
    "domainjobs.brokers.sweep",
)


def _child(args: argparse.Namespace) -> None:
    """Runs in a fresh interpreter: time one measurement, print JSON."""
    sys.path.insert(0, args.base)
    clock = CLOCKS[args.clock]
    started = clock()
    # the libraries, imported once per process whatever the app's size, are not what is
    # measured below: import them first and report their cost on its own
    for library in LIBRARIES:
        importlib.import_module(library)
    import domainjobs

    result: dict[str, Any] = {"library_ms": (clock() - started) * 1000}
    modules = Path(args.modules).read_text().split()
    if args.mode == "import":
        started = clock()
        for name in modules:
            importlib.import_module(name)
        result["ms"] = (clock() - started) * 1000
    else:
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started = clock()
        registry = domainjobs.discover(f"{args.package}.domain", entry_points=False)
        discovered = clock()
        workers = domainjobs.build_workers(registry, url="redis://127.0.0.1:1/0")
        built = clock()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        result["saq_build_ms"] = _hand_written_saq_workers(registry, clock)
        result.update(
            ms=(built - started) * 1000,
            discover_ms=(discovered - started) * 1000,
            build_ms=(built - discovered) * 1000,
            tasks=len(registry.tasks),
            crons=len(registry.crons),
            hooks=len(registry.startup) + len(registry.shutdown),
            workers=len(workers),
        )
    print(json.dumps(result))


def _hand_written_saq_workers(registry: Any, clock: Callable[[], float]) -> float:
    """What a plain SAQ app pays to build the same workers: one ``saq.Worker`` per queue
    with the same functions and cron jobs (saq validates every cron expression again)."""
    from saq import CronJob, Queue, Worker

    started = clock()
    for queue in registry.queues:
        Worker(
            Queue.from_url("redis://127.0.0.1:1/0", name=queue),
            functions=[spec.function for spec in registry.tasks_for(queue)],
            cron_jobs=[CronJob(c.task.function, cron=c.cron) for c in registry.crons_for(queue)],
        )
    return (clock() - started) * 1000


def _measure(
    base: Path,
    package: str,
    modules_file: Path,
    mode: str,
    profile: str | None = None,
    clock: str = "cpu",
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_child",
        "--base",
        str(base),
        "--package",
        package,
        "--modules",
        str(modules_file),
        "--mode",
        mode,
        "--clock",
        clock,
    ]
    if profile:
        command += ["--profile", profile]
    # like a deployed app, measure with bytecode caches (the warm-up run writes them)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DOMAINJOBS_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=base)
    if out.returncode != 0:
        sys.exit(f"bench: measurement failed:\n{out.stderr}")
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def discovery(sizes: list[int], repeats: int, profile: bool, clock: str) -> list[dict[str, Any]]:
    """For each size: generate, warm the bytecode cache, then alternate fresh-interpreter
    measurements of (discover + build) and (bare imports); medians."""
    rows = []
    for size in sizes:
        base = Path(tempfile.mkdtemp(prefix=f"dj-bench-tree{size}-"))
        try:
            package = f"djbench_{size}"
            modules = make_tree(base, package, size)
            modules_file = base / "modules.txt"
            modules_file.write_text("\n".join(modules))
            _measure(base, package, modules_file, "full")  # writes __pycache__
            full, bare = [], []
            for _ in range(repeats):
                full.append(_measure(base, package, modules_file, "full", clock=clock))
                bare.append(_measure(base, package, modules_file, "import", clock=clock)["ms"])
            row = {
                "domains": size,
                "modules": len(modules),
                "tasks": full[0]["tasks"],
                "crons": full[0]["crons"],
                "hooks": full[0]["hooks"],
                "workers": full[0]["workers"],
                "total_ms": statistics.median(r["ms"] for r in full),
                "discover_ms": statistics.median(r["discover_ms"] for r in full),
                "build_ms": statistics.median(r["build_ms"] for r in full),
                "import_ms": statistics.median(bare),
                "library_ms": statistics.median(r["library_ms"] for r in full),
                "saq_build_ms": statistics.median(r["saq_build_ms"] for r in full),
            }
            row["ours_ms"] = row["total_ms"] - row["import_ms"]
            # the least of each: the cost with the least interference from other processes
            row["min_total_ms"] = min(r["ms"] for r in full)
            row["min_import_ms"] = min(bare)
            row["min_ours_ms"] = row["min_total_ms"] - row["min_import_ms"]
            row["beyond_saq_ms"] = row["ours_ms"] - row["saq_build_ms"]
            rows.append(row)
            print(
                f"  {size:5d} domains: discover+build {row['total_ms']:7.1f} ms, bare imports "
                f"{row['import_ms']:7.1f} ms, beyond imports {row['ours_ms']:7.1f} ms "
                f"(plain saq.Worker() for the same jobs {row['saq_build_ms']:6.1f} ms)",
                flush=True,
            )
            if profile:
                stats_file = str(base / "profile.stats")
                _measure(base, package, modules_file, "full", profile=stats_file)
                print_profile(stats_file)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return rows


def print_profile(stats_file: str) -> None:
    """Where discovery spends its time: domainjobs' functions by own and cumulative time."""
    import pstats

    stats = pstats.Stats(stats_file)
    entries = []
    for (file, line, function), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "domainjobs" in file and "djbench_" not in file:
            entries.append((cumulative, own, calls, f"{Path(file).name}:{line}:{function}"))
    print("    domainjobs functions by cumulative time (cumulative ms, own ms, calls):")
    for cumulative, own, calls, where in sorted(entries, reverse=True)[:15]:
        print(f"      {cumulative * 1000:9.1f} {own * 1000:9.1f} {calls:8d}  {where}")
    print("    everything by own time:")
    top = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:12]  # type: ignore[attr-defined]
    for (file, line, function), (_cc, calls, own, _cum, _callers) in top:
        print(f"      {own * 1000:9.1f} ms {calls:8d}  {Path(file).name}:{line}:{function}")


def print_discovery(rows: list[dict[str, Any]], clock: str) -> None:
    """The discovery table, with growth per domain."""
    kind = "process CPU" if clock == "cpu" else "wall-clock"
    print(f"\ndiscover() + build_workers(), fresh interpreter, {kind} ms, medians:")
    print(
        f"  {'domains':>7} {'modules':>7} {'tasks':>6} {'crons':>6} {'total':>8} {'discover':>8} "
        f"{'build':>7} {'imports':>8} {'beyond':>8} {'us/dom':>7} {'saq':>7} {'min beyond':>10}"
    )
    for row in rows:
        per = row["ours_ms"] * 1000 / row["domains"]
        print(
            f"  {row['domains']:7d} {row['modules']:7d} {row['tasks']:6d} {row['crons']:6d} "
            f"{row['total_ms']:8.1f} {row['discover_ms']:8.1f} {row['build_ms']:7.1f} "
            f"{row['import_ms']:8.1f} {row['ours_ms']:8.1f} {per:7.0f} {row['saq_build_ms']:7.1f} "
            f"{row['min_ours_ms']:10.1f}"
        )
    print(
        "  ms; total = discover + build (fresh interpreter); imports = bare import of the same\n"
        "  modules; beyond = total - imports (target < 300 ms at 200 domains, linear);\n"
        "  saq = building the same workers by hand with plain saq.Worker (part of 'beyond');\n"
        "  min beyond = least total - least imports over the repeats"
    )
    libraries = statistics.median(row["library_ms"] for row in rows)
    print(f"  once per process, before any of it: importing saq, redis, domainjobs {libraries:.0f}")


# -- command line ------------------------------------------------------------------------------


def main() -> None:
    """Parse arguments and run the chosen benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "which", nargs="?", default="all", choices=["all", "throughput", "discovery", "_child"]
    )
    parser.add_argument("--url", help="use this Redis server (its db is flushed)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per throughput round")
    parser.add_argument("--rounds", type=int, default=25, help="rounds of each kind")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--domains", default="50,200,1000", help="tree sizes to discover")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per tree size")
    parser.add_argument(
        "--profile",
        nargs="?",
        const=True,
        default=False,
        help="cProfile the discovery of each size",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="discovery timings in process CPU time (default) or wall time",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    # the fresh-interpreter child's own arguments
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    parser.add_argument("--modules", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # stopped with SIGTERM: unwind, so the redis-server and temp folders are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.which == "_child":
        _child(args)
        return
    figures: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    if args.which in ("all", "throughput"):
        print("throughput: no-op task, domainjobs.build_worker vs a hand-written saq.Worker")
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(redis_server())
            figures["throughput"] = throughput(url, args.jobs, args.rounds, args.concurrency)
        print_throughput(figures["throughput"])
    if args.which in ("all", "discovery"):
        print("\ndiscovery: generated trees, all four jobs modules per domain")
        sizes = [int(s) for s in args.domains.split(",") if s.strip()]
        figures["discovery"] = discovery(sizes, args.repeats, bool(args.profile), args.clock)
        print_discovery(figures["discovery"], args.clock)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
