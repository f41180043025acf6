"""Idle worker memory: ``python -m domainjobs run`` on examples/shop vs a plain SAQ worker.

    .venv/bin/python bench/memory.py [--runs 5] [--settle 2.0]
    .venv/bin/python bench/memory.py --importtime     # also: the imports, by own size

One throwaway ``redis-server``. Variants take turns (rotated each run); each starts a fresh
process and, once it has served one job per queue (so both are fully started), waits until
its resident set size has not changed for ``--settle`` seconds, then reads ``VmRSS`` (and
``Pss``, ``RssAnon``) from ``/proc``. Figures are medians over the runs.

- **saq**: a hand-written script (written to a temporary folder) with what the shop app
  declares, for SAQ itself: two ``saq.Worker``s (queues ``default`` and ``billing``,
  concurrency 10) in one process and one event loop, the same 8 task names as plain async
  functions, the 3 cron jobs as ``CronJob``s, a startup hook that opens a SQLite database
  (as the shop's accounts domain does) and a shutdown hook;
- **dj-asyncio**: ``python -m domainjobs run --loop asyncio`` in examples/shop;
- **dj-auto**: ``python -m domainjobs run`` (``--loop auto``: uvloop where installed).

Prints figures only; nothing is asserted (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saq import Queue  # noqa: E402
from saq.job import TERMINAL_STATUSES  # noqa: E402
from tests.servers import redis_server  # noqa: E402

SHOP = ROOT / "examples" / "shop"

PLAIN = '''
"""A plain SAQ worker for the shop's jobs: two queues in one process."""
import asyncio
import os
import signal
import sqlite3

from saq import CronJob, Queue, Worker

async def send_welcome_email(ctx, user_id: int, email: str = "") -> str:
    return email

async def count_welcomes(ctx) -> int:
    return 0

async def price_of(ctx, sku: str) -> int:
    return 0

async def refresh_prices(ctx) -> int:
    return 0

async def create_invoice(ctx, order_id: int, amount_cents: int) -> dict:
    return {}

async def charge(ctx, invoice_id: int, timeout: int = 5) -> str:
    return ""

async def send_reminders(ctx) -> int:
    return 0

async def close_books(ctx) -> str:
    return ""

async def startup(ctx):
    ctx["prices"] = {}
    ctx["accounts_db"] = sqlite3.connect(":memory:")  # as the shop's accounts domain does

async def shutdown(ctx):
    ctx.pop("prices", None)
    ctx.pop("accounts_db").close()

async def main():
    url = os.environ["BENCH_URL"]
    workers = [
        Worker(
            Queue.from_url(url, name="default"),
            functions=[send_welcome_email, count_welcomes, price_of, refresh_prices],
            cron_jobs=[CronJob(refresh_prices, cron="*/15 * * * *", timeout=60)],
            concurrency=10, startup=startup, shutdown=shutdown,
        ),
        Worker(
            Queue.from_url(url, name="billing"),
            functions=[create_invoice, charge, send_reminders, close_books],
            cron_jobs=[
                CronJob(send_reminders, cron="0 9 * * *"),
                CronJob(close_books, cron="5 0 * * *", timeout=300),
            ],
            concurrency=10,
        ),
    ]
    tasks = [asyncio.create_task(w.start()) for w in workers]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for w in workers:
        await w.stop()
    await asyncio.gather(*tasks, return_exceptions=True)

asyncio.run(main())
'''

#: A job per queue that both variants run: (queue, function name, kwargs).
PROBES = {
    "saq": [("default", "count_welcomes", {}), ("billing", "send_reminders", {})],
    "dj": [("default", "accounts.count_welcomes", {}), ("billing", "billing.send_reminders", {})],
}


def memory(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon (status) and Pss (smaps_rollup), in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            values[key] = int(rest.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "Pss":
            values[key] = int(rest.split()[0])
    return values


async def served(url: str, kind: str, timeout: float = 60) -> None:
    """Enqueue one job per queue and wait for each to end: the worker is fully up."""
    for name, function, kwargs in PROBES["saq" if kind == "saq" else "dj"]:
        queue = Queue.from_url(url, name=name)
        await queue.connect()
        try:  # any terminal status will do (plain SAQ's first sweep may abort the job)
            job = await queue.enqueue(function, **kwargs)
            assert job is not None
            # Polled: ``refresh(until_complete=...)`` subscribes after reading the status
            # and so can miss an end that falls between the two.
            deadline = time.monotonic() + timeout
            while job.status not in TERMINAL_STATUSES:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{function} did not end within {timeout}s")
                await asyncio.sleep(0.05)
                await job.refresh()
        finally:
            await queue.disconnect()


async def settle(pid: int, quiet: float, timeout: float = 60) -> dict[str, int]:
    """Memory once VmRSS has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = memory(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = memory(pid)
        if now["VmRSS"] != last["VmRSS"]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    return last


def bench_env(url: str) -> dict[str, str]:
    """The variants' environment: the broker, and the shop's SQLite file out of the tree."""
    database = Path(tempfile.gettempdir()) / f"djbench-accounts-{os.getpid()}.sqlite3"
    return {
        **os.environ,
        "BENCH_URL": url,
        "DOMAINJOBS_URL": url,
        "SHOP_ACCOUNTS_DB": str(database),
    }


def command(kind: str, script: Path) -> tuple[list[str], Path]:
    if kind == "saq":
        return [sys.executable, str(script)], script.parent
    loop = "asyncio" if kind == "dj-asyncio" else "auto"
    return [sys.executable, "-m", "domainjobs", "run", "--loop", loop], SHOP


async def one_run(kind: str, url: str, script: Path, quiet: float) -> dict[str, int]:
    await Queue.from_url(url).redis.flushall()  # type: ignore[attr-defined]
    argv, cwd = command(kind, script)
    env = bench_env(url)
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await served(url, kind)
        return await settle(process.pid, quiet)
    finally:
        process.kill()  # its memory is read: no need for a graceful stop
        process.wait(30)


async def importtime(kind: str, url: str, script: Path) -> dict[str, int]:
    """Every module the started worker imported, with its own import time (µs): the
    variant run once more under ``python -X importtime``."""
    argv, cwd = command(kind, script)
    await Queue.from_url(url).redis.flushall()  # type: ignore[attr-defined]
    env = bench_env(url)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [argv[0], "-X", "importtime", *argv[1:]],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            await served(url, kind)
        finally:
            process.kill()
            process.wait(30)
        errors.seek(0)
        text = errors.read().decode(errors="replace")
    modules = {}
    for line in text.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, _total, name = (part.strip() for part in line[len("import time:") :].split("|"))
            modules[name.strip()] = int(own)
    return modules


def top_packages(modules: dict[str, int], others: dict[str, int]) -> list[tuple[int, str, int]]:
    """(count, top-level package, own µs) of the modules not in ``others``, largest first."""
    extra: dict[str, list[int]] = {}
    for name, own in modules.items():
        if name not in others:
            extra.setdefault(name.split(".")[0], []).append(own)
    return sorted(((len(v), k, sum(v)) for k, v in extra.items()), reverse=True)


async def main(args: argparse.Namespace) -> None:
    kinds = ["saq", "dj-asyncio", "dj-auto"]
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "plain_saq_worker.py"
        script.write_text(textwrap.dedent(PLAIN))
        results: dict[str, list[dict[str, int]]] = {k: [] for k in kinds}
        for index in range(args.runs):
            order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
            for kind in order:
                results[kind].append(await one_run(kind, url, script, args.settle))
        print(f"Python {sys.version.split()[0]}, {args.runs} runs, medians (MiB)")
        metrics = ("VmRSS", "Pss", "RssAnon")
        base = {m: statistics.median(r[m] for r in results["saq"]) for m in metrics}
        for kind in kinds:
            row = {m: statistics.median(r[m] for r in results[kind]) for m in metrics}
            cells = [
                f"{label} {row[m] / 1024:6.1f} ({(row[m] - base[m]) / 1024:+5.1f})"
                for label, m in zip(("RSS", "PSS", "anon"), metrics, strict=True)
            ]
            low = min(r["VmRSS"] for r in results[kind]) / 1024
            high = max(r["VmRSS"] for r in results[kind]) / 1024
            print(f"   {kind:11} " + "   ".join(cells) + f"   RSS range {low:.1f}-{high:.1f}")
        if args.importtime:
            plain = await importtime("saq", url, script)
            ours = await importtime("dj-asyncio", url, script)
            print(f"\nmodules imported: saq {len(plain)}, dj-asyncio {len(ours)}")
            print("imported by dj-asyncio and not by saq, by top-level package (modules, own µs):")
            for count, package, own in top_packages(ours, plain)[:25]:
                print(f"   {count:4}  {own:7}  {package}")
        Path(bench_env(url)["SHOP_ACCOUNTS_DB"]).unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--importtime", action="store_true")
    asyncio.run(main(parser.parse_args()))
