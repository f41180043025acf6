"""What observability costs: CPU per job with tracing and metrics off and on, and the time
of one ``/metrics`` scrape for 200 tasks on 4 queues.

1. per-job CPU: a no-op task run by ``domainjobs.build_worker`` on a real Redis server, in
   one process, in rotating order each round (A B C D, B C D A, ...): ``off`` (nothing
   enabled: the code path of an install without the extras), ``metrics``
   (``enable_metrics``), ``tracing`` (``enable_tracing`` with the OpenTelemetry SDK, a
   ``BatchSpanProcessor`` and an exporter that drops the spans: the SDK's own cost, not a
   collector's), ``both``, and ``unsampled`` (tracing on, but the SDK's sampler drops every
   trace: what the unsampled jobs of a ratio sampler cost). Each round fills the queue
   through ``Jobs.enqueue`` (so traced jobs carry their producer's context), then measures
   this process's CPU time per job until 95 % are done. Also: ``Jobs.enqueue``'s CPU per
   job in each variant, and Python function calls per job (cProfile).
2. scrape: 200 tasks in 50 domains on 4 queues, every task run 3 times (a quarter of them
   failing), then ``/metrics`` rendered over and over: in one process, and in
   multi-process mode (``PROMETHEUS_MULTIPROC_DIR``) with two processes' samples, as the
   supervisor of ``run --processes 2`` serves them.

Usage (from the repository root)::

    .venv/bin/python bench/observability.py                  # both (2-4 minutes)
    .venv/bin/python bench/observability.py cpu --jobs 3000 --rounds 9
    .venv/bin/python bench/observability.py scrape --scrapes 50

Nothing is asserted: the script prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers: the suite's throwaway redis-server

from probe import PROBE_SOURCE  # noqa: E402  (bench/probe.py)
from tests.servers import redis_server  # noqa: E402

VARIANTS = ("off", "metrics", "tracing", "both", "unsampled")

NOOP_TASKS = """
from djbench_obs import probe


async def noop(ctx):
    probe.hit()
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def make_noop_app(base: Path) -> None:
    """``djbench_obs.domain.bench.jobs.tasks.noop``."""
    for folder in ("djbench_obs", "djbench_obs/domain", "djbench_obs/domain/bench"):
        _write(base / folder / "__init__.py", "")
    _write(base / "djbench_obs/domain/bench/jobs/__init__.py", "")
    _write(base / "djbench_obs/probe.py", PROBE_SOURCE)
    _write(base / "djbench_obs/domain/bench/jobs/tasks.py", NOOP_TASKS)


class _Switch:
    """Turns the variants' instrumentation on and off (one SDK provider for the run)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        class Drop(SpanExporter):  # type: ignore[misc]
            def export(self, spans: Any) -> Any:
                return SpanExportResult.SUCCESS

        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(Drop()))
        # what tracing costs where the sampler drops the trace (a ratio sampler's common case)
        self.unsampled = TracerProvider(sampler=ALWAYS_OFF)
        self.unsampled.add_span_processor(BatchSpanProcessor(Drop()))

    def set(self, variant: str) -> None:
        from prometheus_client import CollectorRegistry

        from domainjobs import observability

        observability.disable_tracing()
        observability.disable_metrics()
        if variant in ("tracing", "both"):
            observability.enable_tracing(self.provider)
        if variant == "unsampled":
            observability.enable_tracing(self.unsampled)
        if variant in ("metrics", "both"):
            observability.enable_metrics(CollectorRegistry())

    def flush(self) -> None:
        self.provider.force_flush()


async def _round(
    variant: str, switch: _Switch, url: str, jobs: int, concurrency: int, profiler: Any = None
) -> dict[str, float]:
    import redis.asyncio as aioredis

    import domainjobs

    probe = importlib.import_module("djbench_obs.probe")
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    switch.set(variant)
    registry = domainjobs.discover("djbench_obs.domain", entry_points=False)
    async with domainjobs.Jobs(registry, url=url) as facade:
        cpu0 = time.process_time()
        for start in range(0, jobs, 500):
            await asyncio.gather(
                *(facade.enqueue("bench.noop") for _ in range(min(500, jobs - start)))
            )
        enqueue_cpu = time.process_time() - cpu0
    switch.flush()  # the producer spans' export is not the worker's cost
    target = int(jobs * 0.95)
    done = asyncio.Event()
    probe.reset(target, done)
    worker = domainjobs.build_worker(registry, url=url, concurrency=concurrency)
    worker.SIGNALS = []
    await worker.queue.connect()
    if profiler is not None:
        profiler.enable()
    cpu0 = time.process_time()
    runner = asyncio.create_task(worker.start())
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
        switch.flush()  # the spans' export counts: this is what tracing costs
        cpu = time.process_time() - cpu0
        if profiler is not None:
            profiler.disable()
    finally:
        await worker.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, timeout=60)
        await worker.queue.disconnect()
    switch.set("off")
    return {"cpu_us": cpu / target * 1e6, "enqueue_cpu_us": enqueue_cpu / jobs * 1e6}


def cpu(url: str, jobs: int, rounds: int, concurrency: int) -> dict[str, Any]:
    """Rotate the variants round by round; per-round figures, medians, overheads."""
    import cProfile
    import logging
    import pstats

    logging.getLogger("saq").setLevel(logging.ERROR)
    logging.getLogger("domainjobs").setLevel(logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="dj-bench-obs-"))
    make_noop_app(base)
    sys.path.insert(0, str(base))
    switch = _Switch()
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        for variant in VARIANTS:  # warm-up
            asyncio.run(_round(variant, switch, url, min(jobs, 1000), concurrency))
        for index in range(rounds):
            shift = index % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                runs[variant].append(asyncio.run(_round(variant, switch, url, jobs, concurrency)))
            print(
                f"  round {index + 1}/{rounds}, CPU us/job: "
                + "  ".join(f"{v} {runs[v][-1]['cpu_us']:.0f}" for v in VARIANTS),
                flush=True,
            )
        calls = {}
        for variant in VARIANTS:
            profiler = cProfile.Profile()
            asyncio.run(_round(variant, switch, url, jobs, concurrency, profiler))
            calls[variant] = pstats.Stats(profiler).total_calls / int(jobs * 0.95)  # type: ignore[attr-defined]
    finally:
        sys.path.remove(str(base))
        shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {"jobs": jobs, "rounds": rounds, "concurrency": concurrency}
    for measure in ("cpu_us", "enqueue_cpu_us"):
        off = statistics.median(r[measure] for r in runs["off"])
        row: dict[str, Any] = {"off": off}
        for variant in VARIANTS[1:]:
            ours = statistics.median(r[measure] for r in runs[variant])
            pairs = [
                o[measure] / f[measure] for f, o in zip(runs["off"], runs[variant], strict=True)
            ]
            row[variant] = ours
            row[f"{variant}_overhead"] = ours / off - 1
            row[f"{variant}_pair_overhead"] = statistics.median(pairs) - 1
        result[measure] = row
    result["calls_per_job"] = calls
    result["runs"] = runs
    return result


def print_cpu(result: dict[str, Any]) -> None:
    """The per-job CPU table."""
    print(
        f"\nno-op task, {result['jobs']} jobs per round, concurrency {result['concurrency']}, "
        f"{result['rounds']} rotated rounds, medians:"
    )
    print(f"  {'variant':<8} {'worker us/job':>13} {'overhead':>9} {'pairwise':>9} "
          f"{'enqueue us/job':>15} {'overhead':>9} {'calls/job':>10}")  # fmt: skip
    worker, enqueue, calls = result["cpu_us"], result["enqueue_cpu_us"], result["calls_per_job"]
    print(f"  {'off':<8} {worker['off']:13.1f} {'':>9} {'':>9} {enqueue['off']:15.1f} "
          f"{'':>9} {calls['off']:10.0f}")  # fmt: skip
    for variant in VARIANTS[1:]:
        print(
            f"  {variant:<8} {worker[variant]:13.1f} {worker[f'{variant}_overhead']:+9.1%} "
            f"{worker[f'{variant}_pair_overhead']:+9.1%} {enqueue[variant]:15.1f} "
            f"{enqueue[f'{variant}_overhead']:+9.1%} {calls[variant]:10.0f}"
        )
    print(
        "  worker us/job: this process's CPU time per job run (the worker, the probe, and for\n"
        "  tracing the SDK's batch export thread); enqueue us/job: Jobs.enqueue's CPU per job\n"
        "  (metrics record nothing at enqueue); unsampled: tracing on, sampler ALWAYS_OFF;\n"
        "  overhead: vs off, from the medians; pairwise:\n"
        "  median of the per-round ratios; calls/job: Python function calls (cProfile)."
    )


# -- 2. scrape ---------------------------------------------------------------------------

GEN_TASKS = """
from domainjobs import task
"""

GEN_TASK = """

@task(queue="q{queue}")
async def t{index}(ctx) -> int:
    {body}
"""


def make_scrape_app(base: Path, domains: int = 50, per_domain: int = 4) -> int:
    """``djbench_scrape.domain.dNN``: ``domains`` x ``per_domain`` tasks on 4 queues, the
    last of each domain failing. Returns the number of tasks."""
    for folder in ("djbench_scrape", "djbench_scrape/domain"):
        _write(base / folder / "__init__.py", "")
    for d in range(domains):
        source = GEN_TASKS
        for i in range(per_domain):
            body = 'raise RuntimeError("bench")' if i == per_domain - 1 else "return 1"
            source += GEN_TASK.format(queue=i % 4, index=i, body=body)
        _write(base / f"djbench_scrape/domain/d{d:02d}/__init__.py", "")
        _write(base / f"djbench_scrape/domain/d{d:02d}/jobs/__init__.py", "")
        _write(base / f"djbench_scrape/domain/d{d:02d}/jobs/tasks.py", source)
    return domains * per_domain


async def _fill_scrape(url: str, runs: int) -> None:
    """Run every task ``runs`` times in this process, with metrics on."""
    import domainjobs
    from domainjobs import observability

    observability.enable_metrics()
    registry = domainjobs.discover("djbench_scrape.domain", entry_points=False)
    async with domainjobs.Jobs(registry, url=url) as facade:
        for _ in range(runs):
            for name in registry.tasks:
                await facade.enqueue(name)
    workers = domainjobs.build_workers(registry, url=url, burst=True, concurrency=20)
    await domainjobs.run_workers(workers, handle_signals=False, grace=5)


async def _time_scrapes(url: str, scrapes: int) -> dict[str, Any]:
    import domainjobs
    from domainjobs.brokers.urls import queue_from_url
    from domainjobs.observability.exposition import QueueGauges, render

    registry = domainjobs.discover("djbench_scrape.domain", entry_points=False)
    queues = [queue_from_url(url, name) for name in registry.queues]
    for queue in queues:
        await queue.connect()
    gauges = QueueGauges(queues)
    body, _ = await render(gauges)  # the first scrape counts failed jobs for sure
    times, cpus = [], []
    for _ in range(scrapes):
        t0, c0 = time.perf_counter(), time.process_time()
        body, _ = await render(gauges)
        times.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    t0 = time.perf_counter()
    await render(QueueGauges(queues))  # a scrape that scans for failed jobs
    scan_ms = (time.perf_counter() - t0) * 1000
    for queue in queues:
        await queue.disconnect()
    lines = [line for line in body.decode().splitlines() if not line.startswith("#")]
    return {
        "ms": statistics.median(times),
        "cpu_ms": statistics.median(cpus),
        "p90_ms": sorted(times)[int(len(times) * 0.9)],
        "with_failed_scan_ms": scan_ms,
        "samples": len(lines),
        "bytes": len(body),
        "queues": len(queues),
        "tasks": len(registry.tasks),
    }


def _child(args: argparse.Namespace) -> None:
    """Runs in a fresh interpreter (multi-process mode is chosen at import time)."""
    import logging

    logging.getLogger("saq").setLevel(logging.CRITICAL)
    logging.getLogger("domainjobs").setLevel(logging.CRITICAL)
    sys.path.insert(0, args.base)
    if args.mode == "fill":
        asyncio.run(_fill_scrape(args.url, args.runs))
        print(json.dumps({}))
    else:
        if args.mode == "fill+scrape":
            asyncio.run(_fill_scrape(args.url, args.runs))
        print(json.dumps(asyncio.run(_time_scrapes(args.url, args.scrapes))))


def _run_child(mode: str, base: Path, url: str, runs: int, scrapes: int, folder: str | None):
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if folder is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = folder
    out = subprocess.run(
        [sys.executable, __file__, "child", "--mode", mode, "--base", str(base), "--url", url,
         "--runs", str(runs), "--scrapes", str(scrapes)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"bench child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def scrape(url: str, scrapes: int, runs: int) -> dict[str, Any]:
    """Scrape times in one process and in multi-process mode (two writers)."""
    import redis

    base = Path(tempfile.mkdtemp(prefix="dj-bench-scrape-"))
    folder = tempfile.mkdtemp(prefix="dj-bench-multiproc-")
    make_scrape_app(base)
    try:
        redis.Redis.from_url(url).flushdb()
        single = _run_child("fill+scrape", base, url, runs, scrapes, None)
        redis.Redis.from_url(url).flushdb()
        for _ in range(2):  # two worker processes write their samples
            _run_child("fill", base, url, runs, 0, folder)
        multi = _run_child("scrape", base, url, runs, scrapes, folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return {"single": single, "multiprocess": multi, "runs": runs, "scrapes": scrapes}


def print_scrape(result: dict[str, Any]) -> None:
    """The scrape table."""
    single = result["single"]
    print(
        f"\n/metrics for {single['tasks']} tasks on {single['queues']} queues, each task run "
        f"{result['runs']}x per process, median of {result['scrapes']} scrapes:"
    )
    print(f"  {'mode':<30} {'ms':>6} {'p90 ms':>7} {'CPU ms':>7} {'+failed scan':>13} "
          f"{'samples':>8} {'bytes':>8}")  # fmt: skip
    for name, row in (
        ("one process", single),
        ("multi-process, 2 writers", result["multiprocess"]),
    ):
        print(
            f"  {name:<30} {row['ms']:6.1f} {row['p90_ms']:7.1f} {row['cpu_ms']:7.1f} "
            f"{row['with_failed_scan_ms']:13.1f} {row['samples']:8d} {row['bytes']:8d}"
        )
    print(
        "  ms: wall time of one render (broker round trips for 4 queues included); +failed\n"
        "  scan: a scrape that also counts the stored failed jobs (reused for 100x its time)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "cpu", "scrape", "child"])
    parser.add_argument("--url", help="use this Redis server (its db is flushed)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per CPU round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of each variant")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=30, help="scrapes timed")
    parser.add_argument("--runs", type=int, default=3, help="runs of each task before scraping")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "child":
        _child(args)
        return
    figures: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(redis_server())
        if args.what in ("all", "cpu"):
            figures["cpu"] = cpu(url, args.jobs, args.rounds, args.concurrency)
            print_cpu(figures["cpu"])
        if args.what in ("all", "scrape"):
            figures["scrape"] = scrape(url, args.scrapes, args.runs)
            print_scrape(figures["scrape"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
