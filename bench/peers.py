"""domainjobs beside plain SAQ and its peers (dramatiq, taskiq, streaq, celery), one run,
one throwaway Redis server on loopback, the same harness for every library.

Each round runs every variant once, in an order that rotates from round to round; each
figure is the median over the rounds, and the table gives each one's ratio to plain SAQ
(a hand-written ``saq.Worker`` in its own process) measured in the same run. Per variant
and round:

1. FLUSHALL; the bench process enqueues ``--jobs`` no-op jobs with the library's own
   client (timed: **enqueue/s**), then ``--sleep-jobs`` jobs that sleep 25 ms. Async
   clients keep ``--in-flight`` enqueues in flight (``asyncio.gather``); the sync clients
   (dramatiq, celery) send one message after another, which is how they are used.
2. One worker starts (concurrency ``--concurrency``: asyncio tasks, or threads for
   dramatiq and celery) and drains the queue. Every task calls a probe in the worker's
   own process that records ``time.perf_counter()`` (one clock for all processes on
   Linux) and, at 10 % and 90 % of each kind, ``time.process_time()``; when all jobs are
   done it writes those marks to a file. **no-op drain/s** and **25 ms-sleep drain/s** are
   the rates between the 10 % and 90 % marks of each kind (start-up and tail left out);
   **CPU us/job** is the worker process's CPU time per no-op job over the same window.
   Each sleeping job also measures its own sleep; their ceiling is concurrency / that mean
   sleep (about 390/s at 10: ``asyncio.sleep(0.025)`` wakes a little late), and **of the
   sleep ceiling** is the drain as a share of it.
3. With the worker idle, the bench enqueues a job returning a value and waits for its
   result, one after another, with the library's own way of waiting (its defaults): the
   **result-wait p50** over ``--waits`` jobs (stopping early after ``--wait-budget``
   seconds: plain SAQ's ``Queue.apply`` takes about a second per job).
4. The worker stops (SIGTERM to its process group; in-process: ``worker.stop()``).

Variants (``--only`` takes a comma-separated subset of these names):

- ``dj-run``: ``python -m domainjobs run --concurrency 10`` (its defaults: uvloop and
  hiredis when installed), client ``Jobs.enqueue`` / ``Jobs.apply``;
- ``dj-run-asyncio``: the same with ``--loop asyncio``; ``dj-run-nohiredis``: the same
  with hiredis hidden from redis-py (its pure-Python parser): what the ``speed`` extra buys;
- ``dj-inproc``: ``domainjobs.build_worker`` in the bench process, started with
  ``worker.start()`` (asyncio loop);
- ``dj-batch``: like ``dj-run``, but the jobs are enqueued with ``Jobs.enqueue_many``;
- ``saq``: a hand-written ``saq.Worker(queue, [noop, sleep, echo], concurrency=10)`` in
  its own process (asyncio loop, hiredis), client ``saq.Queue.enqueue`` / ``Queue.apply``;
  the baseline of every ratio;
- ``saq-inproc``: the same worker in the bench process;
- ``dramatiq``: ``dramatiq app --processes 1 --threads 10``, Redis broker, the Results
  middleware with its Redis backend for the result wait only (``store_results`` on that
  actor alone);
- ``taskiq``: ``taskiq worker app:broker --workers 1 --max-async-tasks 10``,
  taskiq-redis's ``RedisStreamBroker`` (acknowledged, like SAQ's active list) and
  ``RedisAsyncResultBackend``;
- ``streaq``: ``streaq run app:worker`` with ``Worker(concurrency=10)``;
- ``celery``: ``celery worker --pool threads --concurrency 10`` (no gossip, mingle or
  heartbeat), Redis broker and result backend (results ignored but for the result wait).

Usage (from the repository root, ``pip install -e '.[dev,bench]'``)::

    .venv/bin/python bench/peers.py                      # everything, about 4-5 minutes
    .venv/bin/python bench/peers.py --rounds 5 --jobs 5000
    .venv/bin/python bench/peers.py --only dj-run,saq,dramatiq
    .venv/bin/python bench/peers.py --only dj-run,dj-run-asyncio,dj-run-nohiredis,saq
    .venv/bin/python bench/peers.py --json peers.json    # also write every figure

Nothing is asserted; the script prints figures. A variant whose library is not installed
is skipped with a note. Worker output goes to ``<tmp>/<variant>.log`` (kept with
``--keep``).
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.servers: the suite's throwaway redis-server

from tests.servers import redis_server  # noqa: E402

# -- the generated apps ------------------------------------------------------------------------

PROBE = '''
"""Completion probe: each benchmark task calls hit(kind) in the worker's own process."""
import json, os, threading, time

_lock = threading.Lock()
_times = {}
_cpu = {}
_targets = {}
_slept = {}
_path = None
_written = False


def configure(targets, path):
    """Targets per kind ({"noop": 2000, "sleep": 300}) and the file written when met."""
    global _path, _written
    _times.clear()
    _cpu.clear()
    _slept.clear()
    _targets.clear()
    _targets.update(targets)
    _path = path
    _written = False


def _from_env():
    spec = os.environ.get("BENCH_TARGETS")
    if spec:
        targets = {k: int(v) for k, v in (p.split("=") for p in spec.split(","))}
        configure(targets, os.environ["BENCH_PROBE_FILE"])


def _marks(target):
    return (target // 10, (target * 9) // 10)


def hit(kind, slept=None):
    now = time.perf_counter()
    global _written
    with _lock:
        if slept is not None:
            _slept.setdefault(kind, []).append(slept)
        times = _times.setdefault(kind, [])
        times.append(now)
        count = len(times)
        target = _targets.get(kind, 0)
        if count in _marks(target):
            _cpu.setdefault(kind, {})[count] = time.process_time()
        if _written or _path is None:
            return
        if all(len(_times.get(k, ())) >= n for k, n in _targets.items()):
            _written = True
            out = {}
            for k, n in _targets.items():
                low, high = _marks(n)
                ts = _times[k]
                out[k] = {
                    "low": low, "high": high, "t_low": ts[low - 1], "t_high": ts[high - 1],
                    "cpu_low": _cpu[k][low], "cpu_high": _cpu[k][high],
                }
                if k in _slept:
                    out[k]["slept"] = sum(_slept[k]) / len(_slept[k])
            tmp = _path + ".tmp"
            with open(tmp, "w") as handle:
                json.dump(out, handle)
            os.replace(tmp, _path)


_from_env()
'''

DJ_TASKS = '''
"""The benchmark's tasks (unmarked: every public function of the module is a task)."""
import asyncio
import time

from benchprobe import hit


async def noop(ctx):
    hit("noop")


async def sleep(ctx):
    began = time.perf_counter()
    await asyncio.sleep(0.025)
    hit("sleep", time.perf_counter() - began)


async def echo(ctx, x: int) -> int:
    return x
'''

SAQ_APP = '''
"""Plain SAQ: the same three functions, and a hand-written worker."""
import asyncio, os, sys, time

from saq import Queue, Worker

from benchprobe import hit


async def noop(ctx):
    hit("noop")


async def sleep(ctx):
    began = time.perf_counter()
    await asyncio.sleep(0.025)
    hit("sleep", time.perf_counter() - began)


async def echo(ctx, *, x):
    return x


FUNCTIONS = [noop, sleep, echo]


async def main(url, concurrency):
    queue = Queue.from_url(url, name="default")
    worker = Worker(queue, FUNCTIONS, concurrency=concurrency)
    await queue.connect()
    await worker.start()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''

DRAMATIQ_APP = '''
"""dramatiq: Redis broker; results stored for the echo actor only."""
import os, time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from benchprobe import hit

URL = os.environ["BENCH_URL"]
backend = RedisBackend(url=URL)
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop():
    hit("noop")


@dramatiq.actor(max_retries=0)
def sleep():
    began = time.perf_counter()
    time.sleep(0.025)
    hit("sleep", time.perf_counter() - began)


@dramatiq.actor(max_retries=0, store_results=True)
def echo(x):
    return x
'''

TASKIQ_APP = '''
"""taskiq: taskiq-redis's stream broker and Redis result backend."""
import asyncio, os, time

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from benchprobe import hit

URL = os.environ["BENCH_URL"]
broker = RedisStreamBroker(URL).with_result_backend(RedisAsyncResultBackend(URL))


@broker.task
async def noop():
    hit("noop")


@broker.task
async def sleep():
    began = time.perf_counter()
    await asyncio.sleep(0.025)
    hit("sleep", time.perf_counter() - began)


@broker.task
async def echo(x):
    return x
'''

STREAQ_APP = '''
"""streaq: one worker object, its three tasks."""
import asyncio, os, time

from streaq import Worker

from benchprobe import hit

worker = Worker(
    redis_url=os.environ["BENCH_URL"],
    concurrency=int(os.environ.get("BENCH_CONCURRENCY", "10")),
)


@worker.task
async def noop():
    hit("noop")


@worker.task
async def sleep():
    began = time.perf_counter()
    await asyncio.sleep(0.025)
    hit("sleep", time.perf_counter() - began)


@worker.task
async def echo(x):
    return x
'''

CELERY_APP = '''
"""celery: Redis broker and result backend; results kept for echo only."""
import os, time

from celery import Celery

from benchprobe import hit

URL = os.environ["BENCH_URL"]
app = Celery("bench", broker=URL, backend=URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


@app.task(name="noop")
def noop():
    hit("noop")


@app.task(name="sleep")
def sleep():
    began = time.perf_counter()
    time.sleep(0.025)
    hit("sleep", time.perf_counter() - began)


@app.task(name="echo", ignore_result=False)
def echo(x):
    return x
'''

NO_HIREDIS = """
import os, sys
if os.environ.get("BENCH_NO_HIREDIS"):
    sys.modules["hiredis"] = None  # redis-py then uses its pure-Python parser
"""


def write_apps(folder: Path) -> None:
    """Every library's app module, the probe, and the domainjobs app tree."""
    files = {
        "benchprobe.py": PROBE,
        "saq_app.py": SAQ_APP,
        "dramatiq_app.py": DRAMATIQ_APP,
        "taskiq_app.py": TASKIQ_APP,
        "streaq_app.py": STREAQ_APP,
        "celery_app.py": CELERY_APP,
        "sitecustomize.py": NO_HIREDIS,
        "benchapp/__init__.py": "",
        "benchapp/domain/__init__.py": "",
        "benchapp/domain/bench/__init__.py": "",
        "benchapp/domain/bench/jobs/__init__.py": "",
        "benchapp/domain/bench/jobs/tasks.py": DJ_TASKS,
    }
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


# -- the harness -------------------------------------------------------------------------------


class Settings:
    """What every variant shares in one run."""

    def __init__(self, args: argparse.Namespace, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.jobs: int = args.jobs
        self.sleep_jobs: int = args.sleep_jobs
        self.concurrency: int = args.concurrency
        self.in_flight: int = args.in_flight
        self.waits: int = args.waits
        self.wait_budget: float = args.wait_budget
        self.timeout: float = args.timeout


async def in_flight(call: Callable[[], Awaitable[Any]], count: int, width: int) -> None:
    """``count`` calls, ``width`` at a time."""
    for start in range(0, count, width):
        await asyncio.gather(*(call() for _ in range(min(width, count - start))))


class Variant:
    """One library set-up: its client, how its worker starts and stops."""

    name = ""
    label = ""
    library = ""  # the module that must import for the variant to run
    in_process = False

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def env(self) -> dict[str, str]:
        """The worker's environment (the probe reads its targets from it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOMAINJOBS_")}
        env.update(
            PYTHONPATH=str(self.s.folder),
            BENCH_URL=self.s.url,
            BENCH_CONCURRENCY=str(self.s.concurrency),
            BENCH_TARGETS=f"noop={self.s.jobs},sleep={self.s.sleep_jobs}",
            BENCH_PROBE_FILE=str(self.probe_file),
        )
        return env

    @property
    def probe_file(self) -> Path:
        return self.s.folder / f"{self.name}.probe.json"

    def command(self) -> list[str]:
        raise NotImplementedError

    async def open(self) -> None:
        """Connect the client."""

    async def close(self) -> None:
        """Disconnect the client."""

    async def enqueue(self, kind: str, count: int) -> None:
        raise NotImplementedError

    async def apply(self) -> Any:
        """Enqueue ``echo(x=1)`` and wait for its result."""
        raise NotImplementedError

    async def start(self) -> Any:
        """Start the worker; return what ``stop`` needs."""
        log = open(self.s.folder / f"{self.name}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            self.command(),
            env=self.env(),
            cwd=self.s.folder,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        return process

    async def stop(self, handle: Any) -> None:
        process: subprocess.Popen[bytes] = handle
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def alive(self, handle: Any) -> bool:
        return bool(handle.poll() is None)


def _python() -> list[str]:
    return [sys.executable]


class DomainjobsRun(Variant):
    name = "dj-run"
    label = "domainjobs `run` (subprocess)"
    library = "domainjobs"
    extra_args: tuple[str, ...] = ()
    hide_hiredis = False

    async def open(self) -> None:
        from domainjobs import Jobs, discover

        sys.path.insert(0, str(self.s.folder))
        self.jobs = Jobs(discover("benchapp.domain", entry_points=False), url=self.s.url)
        await self.jobs.open()

    async def close(self) -> None:
        await self.jobs.close()

    async def enqueue(self, kind: str, count: int) -> None:
        jobs = self.jobs
        name = f"bench.{kind}"
        await in_flight(lambda: jobs.enqueue(name), count, self.s.in_flight)

    async def apply(self) -> Any:
        return await self.jobs.apply("bench.echo", x=1)

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.hide_hiredis:
            env["BENCH_NO_HIREDIS"] = "1"
        return env

    def command(self) -> list[str]:
        return [
            *_python(),
            "-m",
            "domainjobs",
            "run",
            "--url",
            self.s.url,
            "--roots",
            "benchapp.domain",
            "--app-dir",
            str(self.s.folder),
            "--concurrency",
            str(self.s.concurrency),
            *self.extra_args,
        ]


class DomainjobsRunAsyncio(DomainjobsRun):
    name = "dj-run-asyncio"
    label = "domainjobs `run --loop asyncio`"
    extra_args = ("--loop", "asyncio")


class DomainjobsRunNoHiredis(DomainjobsRun):
    name = "dj-run-nohiredis"
    label = "domainjobs `run`, no hiredis"
    hide_hiredis = True


class DomainjobsBatch(DomainjobsRun):
    name = "dj-batch"
    label = "domainjobs `run`, `Jobs.enqueue_many`"

    async def enqueue(self, kind: str, count: int) -> None:
        await self.jobs.enqueue_many(f"bench.{kind}", [{}] * count)


class DomainjobsInProcess(DomainjobsRun):
    name = "dj-inproc"
    label = "domainjobs `build_worker` (in-process)"
    in_process = True

    async def start(self) -> Any:
        import domainjobs

        probe = importlib.import_module("benchprobe")
        probe.configure({"noop": self.s.jobs, "sleep": self.s.sleep_jobs}, str(self.probe_file))
        worker = domainjobs.build_worker(
            self.jobs.registry, queue="default", url=self.s.url, concurrency=self.s.concurrency
        )
        worker.SIGNALS = []
        await worker.queue.connect()
        return worker, asyncio.create_task(worker.start())

    async def stop(self, handle: Any) -> None:
        worker, task = handle
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 30)
        await worker.queue.disconnect()

    def alive(self, handle: Any) -> bool:
        return not handle[1].done()


class PlainSaq(Variant):
    name = "saq"
    label = "saq (hand-written Worker, subprocess)"
    library = "saq"

    async def open(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.s.url, name="default")
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, kind: str, count: int) -> None:
        queue = self.queue
        await in_flight(lambda: queue.enqueue(kind), count, self.s.in_flight)

    async def apply(self) -> Any:
        return await self.queue.apply("echo", x=1)

    def command(self) -> list[str]:
        return [*_python(), "saq_app.py", self.s.url, str(self.s.concurrency)]


class PlainSaqInProcess(PlainSaq):
    name = "saq-inproc"
    label = "saq (hand-written Worker, in-process)"
    in_process = True

    async def start(self) -> Any:
        from saq import Queue, Worker

        sys.path.insert(0, str(self.s.folder))
        app = importlib.import_module("saq_app")
        probe = importlib.import_module("benchprobe")
        probe.configure({"noop": self.s.jobs, "sleep": self.s.sleep_jobs}, str(self.probe_file))
        queue = Queue.from_url(self.s.url, name="default")
        worker = Worker(queue, app.FUNCTIONS, concurrency=self.s.concurrency)
        worker.SIGNALS = []
        await queue.connect()
        return worker, asyncio.create_task(worker.start())

    stop = DomainjobsInProcess.stop
    alive = DomainjobsInProcess.alive


class Dramatiq(Variant):
    name = "dramatiq"
    label = "dramatiq (subprocess, threads)"
    library = "dramatiq"

    async def open(self) -> None:
        os.environ["BENCH_URL"] = self.s.url
        sys.path.insert(0, str(self.s.folder))
        self.app = importlib.import_module("dramatiq_app")

    async def close(self) -> None:
        self.app.broker.close()

    async def enqueue(self, kind: str, count: int) -> None:
        actor = getattr(self.app, kind)
        for _ in range(count):
            actor.send()

    async def apply(self) -> Any:
        message = self.app.echo.send(1)
        return await asyncio.to_thread(message.get_result, block=True, timeout=30_000)

    def command(self) -> list[str]:
        return [
            *_python(),
            "-m",
            "dramatiq",
            "dramatiq_app",
            "--processes",
            "1",
            "--threads",
            str(self.s.concurrency),
        ]


class Taskiq(Variant):
    name = "taskiq"
    label = "taskiq + taskiq-redis (subprocess)"
    library = "taskiq_redis"

    async def open(self) -> None:
        os.environ["BENCH_URL"] = self.s.url
        sys.path.insert(0, str(self.s.folder))
        self.app = importlib.import_module("taskiq_app")
        await self.app.broker.startup()

    async def close(self) -> None:
        await self.app.broker.shutdown()

    async def enqueue(self, kind: str, count: int) -> None:
        task = getattr(self.app, kind)
        await in_flight(task.kiq, count, self.s.in_flight)

    async def apply(self) -> Any:
        sent = await self.app.echo.kiq(1)
        result = await sent.wait_result(timeout=30)
        return result.return_value

    def command(self) -> list[str]:
        return [
            *_python(),
            "-m",
            "taskiq",
            "worker",
            "taskiq_app:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(self.s.concurrency),
            "--log-level",
            "WARNING",
        ]


class Streaq(Variant):
    name = "streaq"
    label = "streaq (subprocess)"
    library = "streaq"

    async def open(self) -> None:
        os.environ["BENCH_URL"] = self.s.url
        sys.path.insert(0, str(self.s.folder))
        self.app = importlib.import_module("streaq_app")
        self.context = self.app.worker
        await self.context.__aenter__()

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)

    async def enqueue(self, kind: str, count: int) -> None:
        task = getattr(self.app, kind)

        async def one() -> None:
            await task.enqueue()

        await in_flight(one, count, self.s.in_flight)

    async def apply(self) -> Any:
        sent = await self.app.echo.enqueue(1)
        result = await sent.result(timeout=30)
        return result.result

    def command(self) -> list[str]:
        return [*_python(), "-m", "streaq", "run", "streaq_app:worker"]


class Celery(Variant):
    name = "celery"
    label = "celery (subprocess, threads)"
    library = "celery"

    async def open(self) -> None:
        os.environ["BENCH_URL"] = self.s.url
        sys.path.insert(0, str(self.s.folder))
        self.app = importlib.import_module("celery_app")

    async def close(self) -> None:
        self.app.app.close()

    async def enqueue(self, kind: str, count: int) -> None:
        task = getattr(self.app, kind)
        for _ in range(count):
            task.delay()

    async def apply(self) -> Any:
        sent = self.app.echo.delay(1)
        return await asyncio.to_thread(sent.get, timeout=30)

    def command(self) -> list[str]:
        return [
            *_python(),
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(self.s.concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ]


VARIANTS: list[type[Variant]] = [
    DomainjobsRun,
    DomainjobsInProcess,
    DomainjobsBatch,
    PlainSaq,
    PlainSaqInProcess,
    Dramatiq,
    Taskiq,
    Streaq,
    Celery,
    DomainjobsRunAsyncio,
    DomainjobsRunNoHiredis,
]
DEFAULT = "dj-run,dj-inproc,dj-batch,saq,saq-inproc,dramatiq,taskiq,streaq,celery"


async def one_round(variant: Variant) -> dict[str, float]:
    """Enqueue, drain, result waits: one measurement of ``variant``."""
    import redis.asyncio as aioredis

    s = variant.s
    client = aioredis.from_url(s.url)
    await client.flushall()
    await client.aclose()
    variant.probe_file.unlink(missing_ok=True)
    await variant.open()
    handle = None
    try:
        started = time.perf_counter()
        await variant.enqueue("noop", s.jobs)
        enqueue_rate = s.jobs / (time.perf_counter() - started)
        await variant.enqueue("sleep", s.sleep_jobs)
        handle = await variant.start()
        deadline = time.monotonic() + s.timeout
        while not variant.probe_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{variant.name}: jobs not done after {s.timeout:.0f} s")
            if not variant.alive(handle):
                raise RuntimeError(f"{variant.name}: the worker stopped (see its log)")
            await asyncio.sleep(0.01)
        marks = json.loads(variant.probe_file.read_text())
        waits: list[float] = []
        if s.waits:
            assert await variant.apply() == 1  # the first one warms the path up
            budget = time.monotonic() + s.wait_budget
            while len(waits) < s.waits and (len(waits) < 3 or time.monotonic() < budget):
                began = time.perf_counter()
                await variant.apply()
                waits.append((time.perf_counter() - began) * 1000)
    finally:
        if handle is not None:
            await variant.stop(handle)
        await variant.close()
    figures = {"enqueue": enqueue_rate}
    for kind in ("noop", "sleep"):
        m = marks[kind]
        figures[kind] = (m["high"] - m["low"]) / (m["t_high"] - m["t_low"])
    # The ceiling of the sleeping jobs is concurrency / their mean sleep as measured inside
    # each job (asyncio.sleep(0.025) wakes a little late; by how much depends on the loop).
    slept = marks["sleep"].get("slept")
    figures["slept_ms"] = slept * 1000 if slept else float("nan")
    figures["sleep_pct"] = figures["sleep"] * slept / s.concurrency * 100 if slept else float("nan")
    noop = marks["noop"]
    figures["cpu_us"] = (noop["cpu_high"] - noop["cpu_low"]) / (noop["high"] - noop["low"]) * 1e6
    figures["wait_p50"] = statistics.median(waits) if waits else float("nan")
    return figures


async def enqueue_modes(s: Settings) -> dict[str, float]:
    """Enqueue/s of one client in four ways, same jobs, same server (no worker running):
    plain SAQ one at a time and ``--in-flight`` at a time, ``Jobs.enqueue`` one at a time,
    ``Jobs.enqueue_many``."""
    import redis.asyncio as aioredis
    from saq import Queue

    from domainjobs import Jobs, discover

    sys.path.insert(0, str(s.folder))
    client = aioredis.from_url(s.url)
    queue = Queue.from_url(s.url, name="default")
    await queue.connect()
    jobs = Jobs(discover("benchapp.domain", entry_points=False), url=s.url)
    await jobs.open()
    modes: dict[str, Callable[[], Awaitable[Any]]] = {
        "saq_sequential": lambda: in_flight(lambda: queue.enqueue("noop"), s.jobs, 1),
        "saq_in_flight": lambda: in_flight(lambda: queue.enqueue("noop"), s.jobs, s.in_flight),
        "jobs_sequential": lambda: in_flight(lambda: jobs.enqueue("bench.noop"), s.jobs, 1),
        "jobs_enqueue_many": lambda: jobs.enqueue_many("bench.noop", [{}] * s.jobs),
    }
    rates: dict[str, float] = {}
    try:
        for mode, run in modes.items():
            await client.flushall()
            started, cpu = time.perf_counter(), time.process_time()
            await run()
            rates[mode] = s.jobs / (time.perf_counter() - started)
            rates[f"{mode}_cpu_us"] = (time.process_time() - cpu) / s.jobs * 1e6
    finally:
        await jobs.close()
        await queue.disconnect()
        await client.aclose()
    return rates


MEASURES = (
    ("enqueue", "enqueue/s", "{:,.0f}", True),
    ("noop", "no-op drain/s", "{:,.0f}", True),
    ("sleep", "25 ms-sleep drain/s", "{:,.0f}", True),
    ("slept_ms", "mean sleep", "{:.2f} ms", None),
    ("sleep_pct", "of the sleep ceiling", "{:.1f} %", None),
    ("wait_p50", "result wait p50", "{:,.1f} ms", False),
    ("cpu_us", "worker CPU/no-op job", "{:,.0f} us", False),
)


def table(results: dict[str, list[dict[str, float]]], labels: dict[str, str]) -> str:
    """Markdown table of the medians, each with its ratio to plain SAQ (>1: better)."""
    medians = {
        name: {m: statistics.median(r[m] for r in rounds) for m, *_ in MEASURES}
        for name, rounds in results.items()
        if rounds
    }
    base = medians.get("saq")
    head = "| library | " + " | ".join(title for _, title, *_ in MEASURES) + " |"
    lines = [head, "|" + " --- |" * (len(MEASURES) + 1)]
    for name, row in medians.items():
        cells = []
        for measure, _, fmt, higher_better in MEASURES:
            cell = fmt.format(row[measure])
            if (
                higher_better is not None
                and base is not None
                and name != "saq"
                and row[measure]
                and base[measure]
            ):
                ratio = (
                    row[measure] / base[measure] if higher_better else base[measure] / row[measure]
                )
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse the flags, run the rounds, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=DEFAULT, help=f"variants to run (default {DEFAULT})")
    parser.add_argument("--rounds", type=int, default=3, help="rotated rounds (default 3)")
    parser.add_argument("--jobs", type=int, default=2000, help="no-op jobs per round")
    parser.add_argument("--sleep-jobs", type=int, default=400, help="25 ms jobs per round")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency")
    parser.add_argument("--in-flight", type=int, default=50, help="async enqueues in flight")
    parser.add_argument("--waits", type=int, default=100, help="result waits per round")
    parser.add_argument(
        "--wait-budget", type=float, default=3.0, help="seconds of result waits per round"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds a drain may take")
    parser.add_argument("--url", help="a Redis server to use instead (it is FLUSHALLed)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--no-enqueue-modes",
        action="store_true",
        help="skip the per-round comparison of enqueue one by one / in flight / batched",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    known = {v.name: v for v in VARIANTS}
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}")
    runnable = []
    for name in chosen:
        try:
            importlib.import_module(known[name].library)
        except ImportError:
            print(f"skipping {name}: {known[name].library} is not installed ('.[bench]' extra)")
            continue
        runnable.append(name)
    import logging

    logging.getLogger("saq").setLevel(logging.ERROR)  # cancelled idle dequeues on stop
    logging.getLogger("domainjobs").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="dj-bench-peers-"))
    write_apps(folder)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runnable}
    labels = {name: known[name].label for name in runnable}
    modes: list[dict[str, float]] = []
    try:
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(redis_server())
            settings = Settings(args, url, folder)
            print(
                f"{len(runnable)} variants x {args.rounds} rounds: {args.jobs} no-op + "
                f"{args.sleep_jobs} sleeping jobs, concurrency {args.concurrency}, {url}",
                flush=True,
            )
            for index in range(args.rounds):
                shift = index % len(runnable)
                for name in runnable[shift:] + runnable[:shift]:
                    figures = asyncio.run(one_round(known[name](settings)))
                    results[name].append(figures)
                    print(
                        f"  round {index + 1} {name:16} enqueue {figures['enqueue']:6.0f}/s  "
                        f"no-op {figures['noop']:6.0f}/s  sleep {figures['sleep']:5.0f}/s  "
                        f"wait p50 {figures['wait_p50']:7.1f} ms  "
                        f"CPU {figures['cpu_us']:5.0f} us/job",
                        flush=True,
                    )
                if not args.no_enqueue_modes:
                    modes.append(asyncio.run(enqueue_modes(settings)))
                    print(
                        f"  round {index + 1} enqueue modes: "
                        + ", ".join(
                            f"{k} {v:6.0f}/s ({modes[-1][k + '_cpu_us']:.0f} us CPU)"
                            for k, v in modes[-1].items()
                            if not k.endswith("_cpu_us")
                        ),
                        flush=True,
                    )
    finally:
        if args.keep:
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nmedians of {args.rounds} rotated rounds; in brackets: the ratio to plain SAQ's "
        "(above 1 is better: faster, or less time/CPU)\n"
    )
    print(table(results, labels))
    if modes:
        median = {k: statistics.median(m[k] for m in modes) for k in modes[0]}
        base = median["saq_sequential"]
        base_cpu = median["saq_sequential_cpu_us"]
        print(f"\nenqueue/s of {args.jobs} no-op jobs, one client, medians:")
        for mode, rate in median.items():
            if mode.endswith("_cpu_us"):
                continue
            cpu = median[f"{mode}_cpu_us"]
            print(
                f"  {mode:18} {rate:8,.0f}/s  {rate / base:5.2f}x saq_sequential; client CPU "
                f"{cpu:4.0f} us/job ({base_cpu / cpu:5.2f}x less)"
            )
    versions = {}
    for dist in ("saq", "redis", "dramatiq", "taskiq", "taskiq-redis", "streaq", "celery"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    print("\n" + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(
        f"25 ms jobs at concurrency {args.concurrency}: nominal ceiling "
        f"{args.concurrency / 0.025:.0f}/s; 'of the sleep ceiling' is of concurrency / mean sleep"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"versions": versions, "rounds": results, "enqueue_modes": modes}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
