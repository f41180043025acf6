"""No-op jobs/s of ``domainjobs run`` with 1 and 2 worker processes, with and without the
``speed`` extra (uvloop + hiredis), each against plain SAQ measured in the same run.

Every configuration runs real processes against one throwaway Redis server (TCP, no
persistence): N no-op jobs are enqueued, then the workers start (concurrency 10 per
process) and the rate is measured from the first finished job until the last one, by
polling the queue's incomplete set in Redis (no in-process counter) until at most 10
jobs are left (plain SAQ strands about two per worker start). Rounds of each
configuration alternate; the median is printed with its ratio to plain SAQ with the same
process count and the same loop/parser, and so is the workers' CPU time per job over the
same window (read from /proc; much less disturbed by other load than jobs/s). Nothing is
asserted.

- plain SAQ: ``saq.Worker(queue, [noop], concurrency=10)`` per process, started by hand.
- domainjobs: ``python -m domainjobs run --concurrency 10 [--processes 2]`` on an app with
  one no-op task (the same command a team deploys; its per-job log line included, written
  to a file).
- "speed off" hides hiredis from redis-py and uses the asyncio loop (``--loop asyncio``);
  "speed on" uses uvloop and hiredis (both plain SAQ and domainjobs).

Usage (from the repository root)::

    .venv/bin/python bench/processes.py
    .venv/bin/python bench/processes.py --jobs 20000 --rounds 3
    .venv/bin/python bench/processes.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from tests.servers import redis_server  # noqa: E402

NO_HIREDIS = """
import os, sys
if os.environ.get("BENCH_NO_HIREDIS"):
    sys.modules["hiredis"] = None  # redis-py then uses its pure-Python parser
"""

PLAIN_SAQ = """
import asyncio, os, signal, sys
from saq import Queue, Worker

async def noop(ctx):
    return None

async def main():
    queue = Queue.from_url(sys.argv[1], name="default")
    worker = Worker(queue, [noop], concurrency=10)
    await queue.connect()
    await worker.start()

if os.environ.get("BENCH_UVLOOP"):
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

TASKS = "async def noop(ctx):\n    return None\n"


def make_files(folder: Path) -> None:
    """The sitecustomize that can hide hiredis, plain SAQ's worker script, the app."""
    (folder / "sitecustomize.py").write_text(textwrap.dedent(NO_HIREDIS))
    (folder / "plain_saq_worker.py").write_text(textwrap.dedent(PLAIN_SAQ))
    jobs = folder / "benchapp" / "domain" / "bench" / "jobs"
    jobs.mkdir(parents=True)
    for package in (jobs.parent.parent.parent, jobs.parent.parent, jobs.parent, jobs):
        (package / "__init__.py").write_text("")
    (jobs / "tasks.py").write_text(TASKS)


def enqueue(url: str, name: str, count: int) -> None:
    """``count`` jobs of ``name`` on queue ``default`` (SAQ's own enqueue)."""
    import asyncio

    from saq import Queue

    async def go() -> None:
        queue = Queue.from_url(url, name="default")
        await queue.connect()
        batch = 500
        for start in range(0, count, batch):
            await asyncio.gather(*(queue.enqueue(name) for _ in range(min(batch, count - start))))
        await queue.disconnect()

    asyncio.run(go())


#: Plain SAQ loses about two jobs per worker start to its sweep race: the
#: clock stops when at most this many jobs are left.
LEFT_OVER = 10


TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor's worker processes)."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                for child in handle.read().split():
                    found += tree(int(child))
    except OSError:
        pass
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (from /proc)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICKS


def measure(
    client: redis.Redis, total: int, processes: list[subprocess.Popen[bytes]], workers: int
) -> tuple[float, float]:
    """Jobs/s from the moment every worker process is up (its SAQ stats record exists)
    and jobs are being done, until all but ``LEFT_OVER`` are done; and the workers' CPU
    microseconds per job over the same window (far less sensitive to other load on the
    machine than the wall-clock rate). Start-up costs stay out of both."""
    key = "saq:default:incomplete"
    deadline = time.monotonic() + 300
    first = None
    pids: list[int] = []
    cpu_start = 0.0
    while True:
        left = client.zcard(key)
        now = time.perf_counter()
        up = first is not None or client.zcard("saq:default:stats") >= workers
        if first is None and up and left < total:
            first = (now, left)
            pids = [pid for p in processes for pid in tree(p.pid)]
            cpu_start = cpu_seconds(pids)
        if left <= LEFT_OVER:
            break
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"workers stopped or stalled with {left} jobs left")
        time.sleep(0.005)
    assert first is not None
    done = first[1] - left
    cpu = cpu_seconds(pids) - cpu_start
    return done / max(now - first[0], 1e-9), cpu / max(done, 1) * 1e6


def run_round(
    kind: str, procs: int, speed: bool, url: str, folder: Path, jobs: int
) -> tuple[float, float]:
    """One measurement of ``kind`` (``saq`` or ``domainjobs``)."""
    client = redis.Redis.from_url(url)
    client.flushall()
    enqueue(url, "noop" if kind == "saq" else "bench.noop", jobs)
    env = {**os.environ, "PYTHONPATH": str(folder)}
    env.pop("DOMAINJOBS_URL", None)
    if speed:
        env["BENCH_UVLOOP"] = "1"
    else:
        env["BENCH_NO_HIREDIS"] = "1"
    log = open(folder / f"{kind}.log", "ab")  # noqa: SIM115
    if kind == "saq":
        commands = [[sys.executable, str(folder / "plain_saq_worker.py"), url]] * procs
    else:
        command = [
            sys.executable,
            "-m",
            "domainjobs",
            "run",
            "--url",
            url,
            "--roots",
            "benchapp.domain",
            "--app-dir",
            str(folder),
            "--concurrency",
            "10",
            "--processes",
            str(procs),
            "--loop",
            "uvloop" if speed else "asyncio",
        ]
        commands = [command]
    started = [
        subprocess.Popen(c, env=env, cwd=folder, stdout=log, stderr=log, start_new_session=True)
        for c in commands
    ]
    try:
        return measure(client, jobs, started, procs)
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()
        client.close()


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configs = [(procs, speed) for speed in (False, True) for procs in (1, 2)]
    results: dict[tuple[str, int, bool], list[float]] = {}
    cpu: dict[tuple[str, int, bool], list[float]] = {}
    with redis_server() as url, tempfile.TemporaryDirectory(prefix="dj-bench-") as tmp:
        folder = Path(tmp)
        make_files(folder)
        for _ in range(args.rounds):
            for procs, speed in configs:
                for kind in ("saq", "domainjobs"):
                    rate, us = run_round(kind, procs, speed, url, folder, args.jobs)
                    results.setdefault((kind, procs, speed), []).append(rate)
                    cpu.setdefault((kind, procs, speed), []).append(us)
                    if not args.json:
                        print(
                            f"  {kind:10} processes={procs} speed={'on ' if speed else 'off'} "
                            f"{rate:8.0f} jobs/s {us:6.0f} us CPU/job",
                            file=sys.stderr,
                        )
    rows: list[dict[str, Any]] = []
    for procs, speed in configs:
        saq = statistics.median(results[("saq", procs, speed)])
        ours = statistics.median(results[("domainjobs", procs, speed)])
        saq_cpu = statistics.median(cpu[("saq", procs, speed)])
        our_cpu = statistics.median(cpu[("domainjobs", procs, speed)])
        rows.append(
            {
                "processes": procs,
                "speed": speed,
                "plain_saq": round(saq),
                "domainjobs": round(ours),
                "ratio_vs_saq": round(ours / saq, 2),
                "plain_saq_cpu_us_per_job": round(saq_cpu),
                "domainjobs_cpu_us_per_job": round(our_cpu),
                "cpu_ratio_vs_saq": round(our_cpu / saq_cpu, 2),
            }
        )
    scaling = {
        speed: round(
            statistics.median(results[("domainjobs", 2, speed)])
            / statistics.median(results[("domainjobs", 1, speed)]),
            2,
        )
        for speed in (False, True)
    }
    saq_scaling = {
        speed: round(
            statistics.median(results[("saq", 2, speed)])
            / statistics.median(results[("saq", 1, speed)]),
            2,
        )
        for speed in (False, True)
    }
    if args.json:
        print(
            json.dumps(
                {
                    "jobs": args.jobs,
                    "rounds": args.rounds,
                    "rows": rows,
                    "domainjobs_2_over_1": scaling,
                    "saq_2_over_1": saq_scaling,
                }
            )
        )
        return
    print(
        f"\nno-op jobs/s, {args.jobs} jobs, median of {args.rounds} round(s), "
        f"concurrency 10 per process, one Redis over TCP, {os.cpu_count()} cores"
    )
    print(
        f"{'processes':>9} {'speed':>5} {'plain SAQ':>10} {'domainjobs':>10} {'ratio':>6}"
        f"   CPU us/job: {'SAQ':>5} {'ours':>5} {'ratio':>6}"
    )
    for row in rows:
        print(
            f"{row['processes']:>9} {'on' if row['speed'] else 'off':>5} "
            f"{row['plain_saq']:>10} {row['domainjobs']:>10} {row['ratio_vs_saq']:>6}"
            f"               {row['plain_saq_cpu_us_per_job']:>5} "
            f"{row['domainjobs_cpu_us_per_job']:>5} {row['cpu_ratio_vs_saq']:>6}"
        )
    for speed in (False, True):
        print(
            f"--processes 2 / --processes 1 (speed {'on' if speed else 'off'}): "
            f"domainjobs {scaling[speed]}x, plain SAQ {saq_scaling[speed]}x"
        )


if __name__ == "__main__":
    main()
