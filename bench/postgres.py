"""PostgreSQL against SAQ's PostgresQueue: ``Jobs.apply`` latency, statements per job, drain.

    .venv/bin/python bench/postgres.py                 # all three parts (4-6 minutes)
    .venv/bin/python bench/postgres.py apply --latency-jobs 200 --rounds 5
    .venv/bin/python bench/postgres.py statements --jobs 500
    .venv/bin/python bench/postgres.py drain --drain-jobs 1000 --rounds 5
    .venv/bin/python bench/postgres.py apply --saq-check     # queues on SAQ's pool check

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
3. drain: no-op jobs/s of one in-process worker (concurrency 10) from its start until
   95 % of N queued jobs are done (``bench/brokers.py``'s harness and probe), and the
   process CPU time per job over the same span. Rounds rotate between plain SAQ
   (``PostgresQueue`` + a hand-written ``saq.Worker``), domainjobs with SAQ's pool check
   (an empty query before every statement: ``--variants`` name ``before``) and domainjobs
   as shipped (``domainjobs.brokers.pgcheck``); medians, and the median of per-round ratios.

Parts 2 and 3 also run the ``before`` variant: domainjobs' queue on the pool SAQ builds
(``check=AsyncConnectionPool.check_connection``), everything else as shipped.

Prints figures only; nothing is asserted (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402
from saq import Worker  # noqa: E402
from saq.queue.postgres import PostgresQueue  # noqa: E402
from tests.servers import postgres_server  # noqa: E402

import domainjobs.brokers.postgres as pg_queue  # noqa: E402
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


@contextlib.contextmanager
def saq_pool_check(enabled: bool) -> Iterator[None]:
    """While ``enabled``: domainjobs' queues get the pool SAQ builds (an empty query before
    every statement), as before ``domainjobs.brokers.pgcheck``."""
    shipped = pg_queue.checked_pool
    if enabled:

        def saq_pool(conninfo: str, idle_after: float = 0.0) -> AsyncConnectionPool[Any]:
            return AsyncConnectionPool(
                conninfo, check=AsyncConnectionPool.check_connection, open=False
            )

        pg_queue.checked_pool = saq_pool  # type: ignore[assignment]
    try:
        yield
    finally:
        pg_queue.checked_pool = shipped


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
    run = ["run", "--app-dir", app_dir, "--concurrency", "10"]
    command = [sys.executable, "-m", "domainjobs", *run]
    if args.saq_check:  # the worker's queue on SAQ's pool too
        command = [sys.executable, "-c", SAQ_CHECK_WORKER, *run]
    worker = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    with saq_pool_check(args.saq_check):
        await _apply_rounds(worker, url, registry, args)


#: ``python -m domainjobs`` with domainjobs' queues on the pool SAQ builds (``--saq-check``).
SAQ_CHECK_WORKER = """
import runpy, sys
from psycopg_pool import AsyncConnectionPool
import domainjobs.brokers.postgres as pg_queue
pg_queue.checked_pool = lambda conninfo, idle_after=0.0: AsyncConnectionPool(
    conninfo, check=AsyncConnectionPool.check_connection, open=False
)
sys.argv[0] = "domainjobs"
runpy.run_module("domainjobs", run_name="__main__", alter_sys=True)
"""


async def _apply_rounds(
    worker: subprocess.Popen[bytes], url: str, registry: Any, args: argparse.Namespace
) -> None:
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
    pool = "SAQ's pool check (--saq-check)" if args.saq_check else "the shipped pool check"
    print(
        f"\n1. Jobs.apply round trip, worker in its own process ({args.rounds} rounds, ms), {pool}"
    )
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
    worker_url, client_url = with_app_name(url, "worker"), with_app_name(url, "client")
    with saq_pool_check(kind == "before"):
        return await _statements_round(kind, scenario, url, roots, n, log, worker_url, client_url)


async def _statements_round(
    kind: str,
    scenario: str,
    url: str,
    roots: str,
    n: int,
    log: StatementLog,
    worker_url: str,
    client_url: str,
) -> dict[str, Any]:
    registry = discover(roots)
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
        for kind in ("saq", "before", "domainjobs"):
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


# -- 3. drain rate --------------------------------------------------------------------------


async def _drain_once(kind: str, url: str, jobs: int) -> tuple[float, float]:
    import brokers  # bench/brokers.py: its app, probe and queues

    probe = importlib.import_module("djbench_brokers.probe")
    tasks = importlib.import_module("djbench_brokers.domain.bench.jobs.tasks")
    await brokers.clear(url)
    filler = brokers.plain_queue(url)
    await filler.connect()
    name = "noop" if kind == "saq" else "bench.noop"
    for start in range(0, jobs, 500):
        await asyncio.gather(*(filler.enqueue(name) for _ in range(min(500, jobs - start))))
    await filler.disconnect()
    target = int(jobs * 0.95)
    done = asyncio.Event()
    probe.reset(target, done)
    worker: Any
    if kind == "saq":
        worker = Worker(
            brokers.plain_queue(url), functions=[tasks.noop], concurrency=10, dequeue_timeout=1.0
        )
    else:
        registry = discover("djbench_brokers.domain", entry_points=False)
        worker = build_worker(registry, url=url, concurrency=10, dequeue_timeout=1.0)
    await worker.queue.connect()
    worker.SIGNALS = []
    started, cpu = time.perf_counter(), time.process_time()
    runner = asyncio.create_task(worker.start())
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
        cpu = time.process_time() - cpu
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker.stop(), 30)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, 30)
        await worker.queue.disconnect()
    return target / (probe.times[target - 1] - started), cpu * 1000 / target


def drain_round(kind: str, url: str, jobs: int) -> tuple[float, float]:
    """One round for ``kind`` (``saq``, ``before`` or ``domainjobs``), in a fresh event
    loop: (jobs/s to 95 %, the process's CPU ms per job from the worker's start to 95 %)."""
    with saq_pool_check(kind == "before"):
        return asyncio.run(_drain_once(kind, url, jobs))


def drain_part(url: str, args: argparse.Namespace) -> None:
    import brokers  # bench/brokers.py

    base = tempfile.mkdtemp(prefix="dj-bench-pgdrain-")
    brokers.make_app(Path(base))
    kinds = args.variants.split(",")
    drain_round("saq", url, min(args.drain_jobs, 200))  # warm-up (schema, imports)
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
    for index in range(args.rounds):
        order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
        for kind in order:
            rate, cpu = drain_round(kind, url, args.drain_jobs)
            rates[kind].append(rate)
            cpus[kind].append(cpu)
            print(f"  {kind}: {rate:.0f} jobs/s, {cpu:.3f} ms CPU/job", file=sys.stderr)
    print(
        f"\n3. no-op drain, one in-process worker, concurrency 10, {args.drain_jobs} jobs, "
        f"{args.rounds} rotated rounds (medians)"
    )
    for kind in kinds:
        print(
            f"   {kind:10}  {statistics.median(rates[kind]):7.0f} jobs/s "
            f"({min(rates[kind]):.0f}-{max(rates[kind]):.0f})  "
            f"CPU {statistics.median(cpus[kind]):.3f} ms/job"
        )
    for a, b in (("domainjobs", "saq"), ("domainjobs", "before"), ("before", "saq")):
        if a in rates and b in rates:
            per_round = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
            print(
                f"   {a} / {b}: {statistics.median(rates[a]) / statistics.median(rates[b]):.2f}x"
                f" (median of per-round ratios {statistics.median(per_round):.2f}x)"
            )


async def main(args: argparse.Namespace) -> None:
    with postgres_server() as url, tempfile.TemporaryDirectory() as tmp:
        roots = make_app(Path(tmp))
        print(f"saq {__import__('saq').__version__}, psycopg {psycopg.__version__}, {url}")
        if args.part in ("all", "apply"):
            await apply_part(url, roots, tmp, args)
        if args.part in ("all", "drain"):
            await clear(url)
            await asyncio.to_thread(drain_part, url, args)
        if args.part in ("all", "statements"):
            await clear(url)
            await statements_part(url, roots, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "part", nargs="?", default="all", choices=("all", "apply", "statements", "drain")
    )
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--saq-jobs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--show", action="store_true", help="print every statement's count")
    parser.add_argument(
        "--saq-check",
        action="store_true",
        help="apply: the client's and the worker's queues on the pool SAQ builds",
    )
    parser.add_argument("--drain-jobs", type=int, default=1000, help="jobs per drain round")
    parser.add_argument("--variants", default="saq,before,domainjobs", help="drain variants")
    asyncio.run(main(parser.parse_args()))
