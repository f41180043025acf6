"""PostgreSQL: ``Jobs.apply`` latency, and SQL statements per job against SAQ's PostgresQueue.

    .venv/bin/python bench/postgres.py                 # both parts (2-3 minutes)
    .venv/bin/python bench/postgres.py apply --latency-jobs 200 --rounds 5
    .venv/bin/python bench/postgres.py statements --jobs 500

One throwaway PostgreSQL cluster (``tests.servers.postgres_server``) for the whole run.

1. apply: a no-op job's round trip with ``python -m domainjobs run`` in its own process
   (concurrency 10). Rounds alternate between ``Jobs.apply`` as shipped (woken by the
   finished-job ``NOTIFY``) and the same facade with notifications switched off
   (``has_notifications`` patched to False: the poll with a back-off from 2 ms that
   ``apply`` used before); ``saq.Queue.apply`` (PostgresQueue, polls every 0.5 s) is
   timed once for reference. p50/p95 over all rounds' jobs, and the median of the
   per-round p50s.
2. statements: with ``log_statement = all`` (set by ``ALTER SYSTEM``, reloaded), the
   statements the server logs per job, by connection (``application_name``: client or
   worker), for plain SAQ (``PostgresQueue.enqueue`` + a hand-written ``saq.Worker``) and
   domainjobs (``Jobs.enqueue`` + ``build_worker``), both in this process, concurrency
   10, queue ``default``. Two scenarios: *drain* (N jobs enqueued, then the worker
   started and run until all are complete) and *one at a time* (worker idle, each job
   enqueued and waited for by a separate connection that is not counted). Statements of
   the workers' timers (stats, sweep, leases) fall in the window and are included.
   ``--show`` prints every distinct statement with its count.

Prints figures only; nothing is asserted (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
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

import psycopg  # noqa: E402
from saq import Worker  # noqa: E402
from saq.queue.postgres import PostgresQueue  # noqa: E402
from tests.servers import postgres_server  # noqa: E402

import domainjobs.client.jobs as client_jobs  # noqa: E402
from domainjobs import Jobs, build_worker, discover  # noqa: E402

TASKS = """
async def noop(ctx) -> None:
    return None
"""


async def noop(ctx: Any) -> None:
    """The plain SAQ worker's task."""


def make_app(folder: Path) -> str:
    jobs = folder / "pgbench" / "domain" / "bench" / "jobs"
    jobs.mkdir(parents=True)
    for package in (folder / "pgbench", folder / "pgbench" / "domain", jobs.parent, jobs):
        (package / "__init__.py").write_text("")
    (jobs / "tasks.py").write_text(textwrap.dedent(TASKS))
    sys.path.insert(0, str(folder))
    return "pgbench.domain"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)]


def with_app_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


async def clear(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in ("saq_jobs", "saq_stats"):
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                await conn.execute(f"TRUNCATE {table}")


# -- 1. apply latency ----------------------------------------------------------------------


async def apply_part(url: str, roots: str, app_dir: str, args: argparse.Namespace) -> None:
    registry = discover(roots)
    env = {**os.environ, "DOMAINJOBS_URL": url, "DOMAINJOBS_ROOTS": roots}
    worker = subprocess.Popen(
        [sys.executable, "-m", "domainjobs", "run", "--app-dir", app_dir, "--concurrency", "10"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shipped = client_jobs.has_notifications
    samples: dict[str, list[float]] = {"notify": [], "poll": []}
    p50s: dict[str, list[float]] = {"notify": [], "poll": []}
    try:
        async with Jobs(registry, url=url) as jobs:
            await jobs.with_options(wait_timeout=60).apply("bench.noop")  # the worker is up
            for index in range(args.rounds):
                order = ("notify", "poll") if index % 2 == 0 else ("poll", "notify")
                for kind in order:
                    client_jobs.has_notifications = (  # type: ignore[assignment]
                        shipped if kind == "notify" else (lambda queue: False)
                    )
                    times = []
                    for _ in range(args.latency_jobs):
                        started = time.perf_counter()
                        await jobs.apply("bench.noop")
                        times.append((time.perf_counter() - started) * 1000)
                    samples[kind] += times
                    p50s[kind].append(pct(times, 0.5))
            client_jobs.has_notifications = shipped
            plain = PostgresQueue.from_url(url, name="default")
            await plain.connect()
            saq_times = []
            for _ in range(args.saq_jobs):
                started = time.perf_counter()
                await plain.apply("bench.noop")
                saq_times.append((time.perf_counter() - started) * 1000)
            await plain.disconnect()
    finally:
        client_jobs.has_notifications = shipped
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    print(f"\n1. Jobs.apply round trip, worker in its own process ({args.rounds} rounds, ms)")
    rows = [
        ("Jobs.apply, NOTIFY (now)", samples["notify"], p50s["notify"]),
        ("Jobs.apply, poll (before)", samples["poll"], p50s["poll"]),
        ("saq.Queue.apply (0.5 s poll)", saq_times, [pct(saq_times, 0.5)]),
    ]
    for label, values, medians in rows:
        print(
            f"   {label:30} n={len(values):5}  p50 {pct(values, 0.5):7.2f}  "
            f"p95 {pct(values, 0.95):7.2f}  median of round p50s {statistics.median(medians):7.2f}"
        )
    ratios = [b / a for a, b in zip(p50s["notify"], p50s["poll"], strict=True)]
    print(f"   poll p50 / notify p50, per round: median {statistics.median(ratios):.2f}x")


# -- 2. statements per job -----------------------------------------------------------------

ENTRY = re.compile(r"^(\w*)\|LOG:  (?:statement|execute [^:]*): (.*)$")


class StatementLog:
    """The cluster's log with ``log_statement = all``, read from an offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def read(self) -> list[tuple[str, str]]:
        """(application_name, statement) logged since ``mark``, continuation lines joined."""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        entries: list[tuple[str, str]] = []
        for line in text.splitlines():
            match = ENTRY.match(line)
            if match:
                entries.append((match.group(1), match.group(2)))
            elif entries and not re.match(r"^\w*\|", line):
                app, sql = entries[-1]
                entries[-1] = (app, f"{sql} {line.strip()}")
        return entries


def shape(sql: str) -> str:
    """A statement with whitespace folded, literals left as they are, cut to 90 chars."""
    text = " ".join(sql.split()) or "(empty: the pool's check of a connection it hands out)"
    return text if len(text) <= 90 else text[:87] + "..."


async def enable_logging(url: str) -> StatementLog:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute("ALTER SYSTEM SET log_line_prefix = '%a|'")
        await conn.execute("SELECT pg_reload_conf()")
        row = await (await conn.execute("SHOW data_directory")).fetchone()
    assert row is not None
    return StatementLog(Path(row[0]).parent / "log")


async def wait_complete(url: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(
        with_app_name(url, "bench"), autocommit=True
    ) as conn:
        while True:
            cursor = await conn.execute("SELECT count(*) FROM saq_jobs WHERE status = 'complete'")
            row = await cursor.fetchone()
            if row is not None and row[0] >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} jobs did not complete")
            await asyncio.sleep(0.002)


async def statements_round(
    kind: str, scenario: str, url: str, roots: str, n: int, log: StatementLog
) -> dict[str, Any]:
    await clear(url)
    registry = discover(roots)
    worker_url, client_url = with_app_name(url, "worker"), with_app_name(url, "client")
    worker: Any
    if kind == "saq":
        wq = PostgresQueue.from_url(worker_url, name="default")
        worker = Worker(wq, functions=[noop], concurrency=10)
        client: Any = PostgresQueue.from_url(client_url, name="default")
        await client.connect()

        async def enqueue() -> None:
            await client.enqueue("noop")
    else:
        worker = build_worker(registry, url=worker_url, concurrency=10)
        client = Jobs(registry, url=client_url)
        await client.open()

        async def enqueue() -> None:
            await client.enqueue("bench.noop")

    await worker.queue.connect()
    runner: asyncio.Task[Any] | None = None
    if scenario == "one":
        runner = asyncio.create_task(worker.start())
        if kind == "saq":
            await enqueue()
        else:
            await client.enqueue("bench.noop")
        await wait_complete(url, 1)
        await clear(url)
        log.mark()
        for index in range(n):
            await enqueue()
            await wait_complete(url, index + 1)
    else:
        log.mark()
        for _ in range(n):
            await enqueue()
        runner = asyncio.create_task(worker.start())
        await wait_complete(url, n)
    entries = log.read()
    await worker.stop()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await runner
    await worker.queue.disconnect()
    if kind == "saq":
        await client.disconnect()
    else:
        await client.close()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for app, sql in entries:
        counts[app][shape(sql)] += 1
    return counts


async def statements_part(url: str, roots: str, args: argparse.Namespace) -> None:
    log = await enable_logging(url)
    print(f"\n2. statements per job ({args.jobs} no-op jobs per scenario, concurrency 10)")
    for scenario, label in (("drain", "drain"), ("one", "one at a time")):
        for kind in ("saq", "domainjobs"):
            counts = await statements_round(kind, scenario, url, roots, args.jobs, log)
            client = sum(counts["client"].values()) / args.jobs
            worker = sum(counts["worker"].values()) / args.jobs
            print(
                f"   {label:13} {kind:10}  client {client:5.2f}  worker {worker:5.2f}  "
                f"total {client + worker:5.2f} per job"
            )
            if args.show:
                for app in ("client", "worker"):
                    for sql, count in counts[app].most_common():
                        print(f"      {app:6} {count / args.jobs:6.2f}  {sql}")


async def main(args: argparse.Namespace) -> None:
    with postgres_server() as url, tempfile.TemporaryDirectory() as tmp:
        roots = make_app(Path(tmp))
        print(f"saq {__import__('saq').__version__}, psycopg {psycopg.__version__}, {url}")
        if args.part in ("all", "apply"):
            await apply_part(url, roots, tmp, args)
        if args.part in ("all", "statements"):
            await clear(url)
            await statements_part(url, roots, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", default="all", choices=("all", "apply", "statements"))
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--saq-jobs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--show", action="store_true", help="print every statement's count")
    asyncio.run(main(parser.parse_args()))
