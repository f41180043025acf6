"""Where a no-op job's time goes, and what fewer server round trips per job would save.

A bench-only prototype, not the product: it subclasses ``SweepSafeRedisQueue`` here, in
the bench, to measure what the Redis queue would gain by taking and finishing jobs with
server-side scripts. Variants, each one worker in this process (concurrency 10, asyncio
loop), the same no-op task, jobs enqueued beforehand by a plain SAQ client:

- ``saq``: ``saq.Worker`` on SAQ's own ``RedisQueue`` (the baseline);
- ``dj``: ``domainjobs.build_worker`` on ``SweepSafeRedisQueue`` (what ships today: take
  and mark active in one fenced script, ``take_active``, finish in one);
- ``dj-quiet``: the same with the ``QuietLogs`` mixin (SAQ's "Finished" text not built);
- ``dj-3rt``: the same worker on a prototype queue with three round trips per job:
  dequeue = one script (LMOVE + GET; BLMOVE only when the queue is empty), mark active =
  one script (SET + PUBLISH), finish = one script (LREM, ZREM, SETEX, PUBLISH). The
  stored bytes are still made by SAQ's serializer in Python: SAQ's format exactly;
- ``dj-2rt-append``: two round trips keeping SAQ's bytes: the take script appends the new
  top-level values (status, started, attempts, worker_id) to the stored object, which
  Python's ``json.loads`` reads last-wins; cjson only reads the attempt count;
- ``dj-2rt``: two round trips: dequeue and mark active in one script, which rewrites
  the job JSON on the server with Lua's cjson (status, started, attempts, worker_id),
  then the same finish script. cjson changes the bytes: key order, and numbers pass
  through Lua doubles (integers beyond 2**53 and floats with more than 14 significant
  digits would be altered), so this variant shows the ceiling, not a drop-in design.

Per variant it prints the steady rate (jobs/s between 10 % and 90 % of completions), the
process CPU time per job, client round trips per job (counted at redis-py's
``send_packed_command``: a pipeline or script is one), Redis commands per job (the
server's ``INFO commandstats``, script-internal commands included), and with
``--profile`` the Python function calls per job and the own time split by package.

    .venv/bin/python bench/onescript.py [--jobs 3000] [--rounds 5] [--profile]
    .venv/bin/python bench/onescript.py --only saq,dj --loops asyncio,uvloop
    BENCH_NO_HIREDIS=1 PYTHONPATH=<folder with peers.py's sitecustomize> ...  # no hiredis

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib
import pstats
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio.connection import AbstractConnection  # noqa: E402
from saq.job import Job, Status  # noqa: E402
from saq.queue.redis import RedisQueue  # noqa: E402
from tests.servers import redis_server  # noqa: E402

from domainjobs.brokers.redis import SweepSafeRedisQueue  # noqa: E402

# -- round-trip counter --------------------------------------------------------------------

ROUND_TRIPS = [0]
_send = AbstractConnection.send_packed_command


async def _counting_send(self: Any, command: Any, check_health: bool = True) -> None:
    ROUND_TRIPS[0] += 1
    await _send(self, command, check_health)


AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]

# -- the prototype queues ------------------------------------------------------------------

# KEYS: queued, active. Takes the next job id, returns {id, bytes} (nil when empty).
TAKE = """
local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not id then return nil end
return {id, redis.call('GET', id)}
"""

# KEYS: job id. ARGV: bytes, status. SAQ's _update (SET, then PUBLISH) in one step.
MARK = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[2])
return 1
"""

# KEYS: active, incomplete, job id. ARGV: bytes, ttl, status. SAQ's _finish in one step.
FINISH = """
redis.call('LREM', KEYS[1], 1, KEYS[3])
redis.call('ZREM', KEYS[2], KEYS[3])
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SETEX', KEYS[3], ttl, ARGV[1])
elseif ttl == 0 then redis.call('SET', KEYS[3], ARGV[1])
else redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', KEYS[3], ARGV[3])
return 1
"""

# KEYS: queued, active. ARGV: started ms, worker id. Take + mark active, cjson rewrite.
TAKE_AND_MARK = """
local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not id then return nil end
local payload = redis.call('GET', id)
if not payload then return {id, false} end
local job = cjson.decode(payload)
job['status'] = 'active'
job['started'] = tonumber(ARGV[1])
job['attempts'] = (job['attempts'] or 0) + 1
job['worker_id'] = ARGV[2]
local new = cjson.encode(job)
redis.call('SET', id, new)
redis.call('PUBLISH', id, 'active')
return {id, new}
"""

# The same, keeping every byte SAQ wrote: the new top-level values are appended to the
# object (JSON readers such as Python's json.loads keep the last of a repeated key), and
# cjson only reads the attempt count. The next write from Python (finish, retry)
# serializes the job afresh, without the repeats.
TAKE_AND_MARK_APPEND = """
local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not id then return nil end
local payload = redis.call('GET', id)
if not payload then return {id, false} end
local attempts = tonumber(cjson.decode(payload)['attempts']) or 0
local new = string.sub(payload, 1, -2) .. ', "status": "active", "started": ' .. ARGV[1]
    .. ', "attempts": ' .. (attempts + 1) .. ', "worker_id": ' .. cjson.encode(ARGV[2]) .. '}'
redis.call('SET', id, new)
redis.call('PUBLISH', id, 'active')
return {id, new}
"""


class ThreeTrips(SweepSafeRedisQueue):
    """Dequeue, mark active, finish: one script each."""

    take_active = None  # the worker then takes through ``dequeue`` (this prototype's)

    def _s(self, source: str) -> Any:
        return self._script(source)

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        reply = await self._s(TAKE)(keys=[self._queued, self._active])
        if reply is None:
            job_id = await self.redis.blmove(self._queued, self._active, timeout, "LEFT", "RIGHT")
            if job_id is None:
                return None
            return await self._get_job_by_id(job_id)
        return self.deserialize(reply[1])

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        if status is None:
            await super()._update(job, status, **kwargs)
            return
        if status == Status.ACTIVE and job.worker_id:
            await self.hold_lease(job.worker_id)
        job.status = status
        await self._s(MARK)(keys=[job.id], args=[self.serialize(job), status])

    async def _finish(
        self, job: Job, status: Status, *, result: Any = None, error: str | None = None
    ) -> None:
        await self._s(FINISH)(
            keys=[self._active, self._incomplete, job.id],
            args=[self.serialize(job), job.ttl, status],
        )


class TwoTrips(ThreeTrips):
    """Dequeue and mark active in one script (cjson), finish in one."""

    worker_id = ""
    take_script = TAKE_AND_MARK

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._marked: set[str] = set()

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        from saq.utils import now

        reply = await self._s(self.take_script)(
            keys=[self._queued, self._active], args=[now(), self.worker_id]
        )
        if reply is None:
            job_id = await self.redis.blmove(self._queued, self._active, timeout, "LEFT", "RIGHT")
            if job_id is None:
                return None
            return await self._get_job_by_id(job_id)
        job = self.deserialize(reply[1])
        if job is not None:
            job.attempts -= 1  # saq.Worker.process counts the attempt again
            self._marked.add(job.id)
        return job

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        if status == Status.ACTIVE and job.id in self._marked:
            self._marked.discard(job.id)
            if job.worker_id:
                await self.hold_lease(job.worker_id)
            job.status = status
            return  # the take script marked it already
        await super()._update(job, status, **kwargs)


class TwoTripsAppend(TwoTrips):
    """Two round trips, SAQ's bytes kept (new top-level values appended)."""

    take_script = TAKE_AND_MARK_APPEND


class Quiet(SweepSafeRedisQueue):
    """Today's queue with the ``QuietLogs`` mixin (no log text built when not logged)."""


# -- the harness ---------------------------------------------------------------------------

PROBE = """
import time
times = []
target = 0
event = None

def reset(n, e):
    global target, event
    times.clear()
    target, event = n, e

def hit():
    times.append(time.perf_counter())
    if len(times) == target and event is not None:
        event.set()
"""

TASKS = """
from osbench import probe

async def noop(ctx):
    probe.hit()
"""

VARIANTS = ("saq", "dj", "dj-quiet", "dj-3rt", "dj-2rt", "dj-2rt-append")


def make_app(base: Path) -> None:
    for folder in ("osbench", "osbench/domain", "osbench/domain/b", "osbench/domain/b/jobs"):
        (base / folder).mkdir(parents=True, exist_ok=True)
        (base / folder / "__init__.py").write_text("")
    (base / "osbench/probe.py").write_text(textwrap.dedent(PROBE))
    (base / "osbench/domain/b/jobs/tasks.py").write_text(textwrap.dedent(TASKS))


async def fill(url: str, function: str, count: int) -> None:
    queue = RedisQueue.from_url(url, name="default")
    await queue.connect()
    await queue.redis.flushall()
    for start in range(0, count, 500):
        await asyncio.gather(*(queue.enqueue(function) for _ in range(min(500, count - start))))
    await queue.disconnect()


def make_worker(kind: str, url: str, concurrency: int) -> Any:
    import redis.asyncio as aioredis
    from saq import Worker

    import domainjobs

    tasks = importlib.import_module("osbench.domain.b.jobs.tasks")
    if kind == "saq":
        return Worker(
            RedisQueue.from_url(url, name="default"),
            functions=[tasks.noop],
            concurrency=concurrency,
        )
    queue_class = {
        "dj": SweepSafeRedisQueue,
        "dj-quiet": Quiet,
        "dj-3rt": ThreeTrips,
        "dj-2rt": TwoTrips,
        "dj-2rt-append": TwoTripsAppend,
    }[kind]
    queue = queue_class(aioredis.from_url(url), name="default")
    registry = domainjobs.discover("osbench.domain", entry_points=False)
    worker = domainjobs.build_worker(registry, queue=queue, concurrency=concurrency)
    if isinstance(queue, TwoTrips):
        queue.worker_id = worker.id
    return worker


async def commandstats(url: str) -> dict[str, int]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def one_round(
    kind: str, url: str, jobs: int, concurrency: int, profiler: Any = None
) -> dict[str, Any]:
    probe = importlib.import_module("osbench.probe")
    await fill(url, "noop" if kind == "saq" else "b.noop", jobs)
    target = int(jobs * 0.95)  # plain SAQ may strand a job or two at a worker's start
    done = asyncio.Event()
    probe.reset(target, done)
    worker = make_worker(kind, url, concurrency)
    worker.SIGNALS = []
    await worker.queue.connect()
    before = await commandstats(url)
    trips = ROUND_TRIPS[0]
    if profiler is not None:
        profiler.enable()
    cpu = time.process_time()
    runner = asyncio.create_task(worker.start())
    try:
        await asyncio.wait_for(done.wait(), 120)
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
        trips = ROUND_TRIPS[0] - trips
        after = await commandstats(url)
    finally:
        await worker.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, 30)
        await worker.queue.disconnect()
    times = probe.times
    low, high = len(times) // 10, (len(times) * 9) // 10
    commands = {k: (after.get(k, 0) - before.get(k, 0)) / target for k in after}
    return {
        "rate": (high - low) / (times[high] - times[low]),
        "cpu_us": cpu / target * 1e6,
        "trips": trips / target,
        "commands": {k: round(v, 2) for k, v in commands.items() if v >= 0.01},
    }


PACKAGES = (
    ("redis-py", "/redis/"),
    ("hiredis", "hiredis"),
    ("asyncio", "/asyncio/"),
    ("saq", "/saq/"),
    ("domainjobs", "/domainjobs/"),
    ("json", "/json/"),
    ("socket/select (C)", "method 'send'"),
    ("socket/select (C)", "method 'poll'"),
    ("socket/select (C)", "method 'recv"),
)


def split_by_package(profiler: cProfile.Profile, jobs: int) -> tuple[float, dict[str, float]]:
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (file, _line, func), (_cc, _calls, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file} {func}"
        name = next((n for n, marker in PACKAGES if marker in where), "other")
        totals[name] = totals.get(name, 0.0) + own
    whole = sum(totals.values())
    calls = stats.total_calls / jobs  # type: ignore[attr-defined]
    return calls, {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def run_on_loop(kind: str, default_loop: str, coro_factory: Any) -> Any:
    """Run ``coro_factory(variant)`` on the loop named after ``@`` in ``kind``."""
    variant, _, loop = kind.partition("@")
    if (loop or default_loop) == "uvloop":
        import uvloop  # the speed extra

        return uvloop.run(coro_factory(variant))
    return asyncio.run(coro_factory(variant))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--profile", action="store_true", help="cProfile one more round each")
    parser.add_argument(
        "--loops",
        default="asyncio",
        help="event loops to run each variant on: asyncio, uvloop or asyncio,uvloop",
    )
    args = parser.parse_args()
    import logging

    logging.getLogger("saq").setLevel(logging.ERROR)
    logging.getLogger("domainjobs").setLevel(logging.WARNING)
    loops = [loop for loop in args.loops.split(",") if loop]
    kinds = [
        f"{k}@{loop}" if len(loops) > 1 else k for k in args.only.split(",") if k for loop in loops
    ]
    base = Path(tempfile.mkdtemp(prefix="dj-bench-os-"))
    make_app(base)
    sys.path.insert(0, str(base))
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        with redis_server() as url:
            for kind in kinds:  # warm-up
                run_on_loop(kind, loops[0], lambda k: one_round(k, url, 500, args.concurrency))
            for index in range(args.rounds):
                shift = index % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    r = run_on_loop(
                        kind, loops[0], lambda k: one_round(k, url, args.jobs, args.concurrency)
                    )
                    results[kind].append(r)
                    print(
                        f"  round {index + 1} {kind:13} {r['rate']:6.0f} jobs/s "
                        f"{r['cpu_us']:5.0f} us CPU/job {r['trips']:4.2f} trips/job",
                        flush=True,
                    )
            profiles = {}
            if args.profile:
                for kind in kinds:
                    profiler = cProfile.Profile()
                    run_on_loop(
                        kind,
                        loops[0],
                        lambda k, p=profiler: one_round(k, url, args.jobs, args.concurrency, p),
                    )
                    profiles[kind] = split_by_package(profiler, int(args.jobs * 0.95))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    base_rate = statistics.median(r["rate"] for r in results[kinds[0]])
    base_cpu = statistics.median(r["cpu_us"] for r in results[kinds[0]])
    print(
        f"\nno-op jobs, {args.jobs} per round, concurrency {args.concurrency}, medians of "
        f"{args.rounds} rotated rounds (ratios against {kinds[0]}):"
    )
    print(
        f"  {'variant':13} {'jobs/s':>7} {'ratio':>6} {'CPU us/job':>10} {'ratio':>6} {'trips':>6}"
    )
    for kind in kinds:
        rate = statistics.median(r["rate"] for r in results[kind])
        cpu = statistics.median(r["cpu_us"] for r in results[kind])
        trips = statistics.median(r["trips"] for r in results[kind])
        print(
            f"  {kind:13} {rate:7.0f} {rate / base_rate:6.2f} {cpu:10.0f} {base_cpu / cpu:6.2f} "
            f"{trips:6.2f}"
        )
    for kind in kinds:
        print(f"  {kind} Redis commands per job: {results[kind][-1]['commands']}")
    for kind, (calls, split) in profiles.items():
        parts = ", ".join(f"{k} {v:.0%}" for k, v in split.items())
        print(f"  {kind}: {calls:.0f} Python calls per job; own time: {parts}")


if __name__ == "__main__":
    main()
