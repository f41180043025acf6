"""Throughput with fencing against the code before it, in the same run.

Every write a worker makes about a job is fenced on its lease (docs/reliability.md): the
mark-active, finish and retry writes are Lua scripts that check the lease first. This bench
measures what that costs: no-op jobs/s through ``run_workers`` (what ``run`` does), the
current source tree against the tree before fencing (``--before``, by default the parent of
the commit that introduced it), each round in a fresh interpreter, rounds interleaved (A B,
B A, ...), on one Redis server. It prints jobs/s per round, the medians and their ratio
(target >= 0.97).

Usage (from the repository root)::

    .venv/bin/python bench/fencing.py                       # starts its own redis-server
    .venv/bin/python bench/fencing.py --jobs 5000 --rounds 9
    .venv/bin/python bench/fencing.py --before v0.1.0       # any git ref

Nothing is asserted: the script prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # tests.servers: the suite's throwaway redis-server

from tests.servers import redis_server  # noqa: E402

LEASES = "src/domainjobs/brokers/leases.py"


def before_ref() -> str:
    """The parent of the first commit that fenced the workers' writes."""
    found = subprocess.run(
        ["git", "log", "--format=%H", "--reverse", "-S", "FENCE: contextvars", "--", LEASES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not found:
        raise SystemExit("cannot find the commit that introduced fencing: pass --before REF")
    return f"{found[0]}^"


def export_tree(ref: str, into: Path) -> Path:
    """``src/`` as of ``ref``, exported into ``into``; return the folder to put on the path."""
    archive = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def one_round(src: Path, url: str, jobs: int, concurrency: int, app: Path) -> dict[str, float]:
    """Run one timed round in a fresh interpreter with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(app)])}
    threads = ("--concurrency", str(concurrency))
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--url", url, "--jobs", str(jobs), *threads],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def child(url: str, jobs: int, concurrency: int) -> None:
    """The timed round (in the child interpreter): ``bench/core.py``'s run_workers round."""
    import logging

    import core  # bench/core.py: its app, fill and timing

    import domainjobs

    logging.disable(logging.CRITICAL)
    result = asyncio.run(core._timed_run("run_workers", url, jobs, concurrency))
    print(json.dumps({**result, "module": domainjobs.__file__}))


def main() -> None:
    """Parse the arguments and run the comparison (or one child round)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this Redis server (its db is flushed)")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of each kind")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--before", help="git ref of the code before fencing")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(HERE))
        child(args.url, args.jobs, args.concurrency)
        return
    ref = args.before or before_ref()
    with tempfile.TemporaryDirectory(prefix="dj-fencing-") as tmp:
        before = export_tree(ref, Path(tmp) / "before")
        app = Path(tmp) / "app"
        sys.path.insert(0, str(HERE))
        import core

        core.make_throughput_app(app)
        trees = {"fenced": ROOT / "src", "before": before}
        if args.url:
            figures = compare(trees, args.url, args, app)
        else:
            with redis_server() as url:
                figures = compare(trees, url, args, app)
    figures["before_ref"] = ref
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def compare(trees: dict[str, Path], url: str, args: Any, app: Path) -> dict[str, Any]:
    """Interleave the trees round by round; the medians and their ratio."""
    rates: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    modules: dict[str, str] = {}
    order = list(trees)
    for number in range(args.rounds):
        for name in order if number % 2 == 0 else order[::-1]:
            result = one_round(trees[name], url, args.jobs, args.concurrency, app)
            rates[name].append(result["total"])
            cpu[name].append(result["cpu_us"])
            modules[name] = str(result["module"])
            print(f"round {number + 1}: {name:7s} {result['total']:8.0f} jobs/s", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "jobs_per_round": args.jobs,
        "rounds": args.rounds,
        "jobs_per_s": {name: round(value) for name, value in medians.items()},
        "cpu_us_per_job": {name: round(statistics.median(v), 1) for name, v in cpu.items()},
        "ratio_fenced_to_before": round(medians["fenced"] / medians["before"], 3),
        "modules": modules,
    }


if __name__ == "__main__":
    main()
