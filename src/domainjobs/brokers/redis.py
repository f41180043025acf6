"""``SweepSafeRedisQueue``: SAQ's Redis queue whose sweep loses no job (docs/reliability.md).

Plain SAQ's ``dequeue`` moves a job id to the active list (BLMOVE) and only later does the
worker write the job's status ``active``; its sweep aborts every job in the active list whose
status is not ``active``, so a job caught in between is aborted (and lost when it has no
retries left). This queue keeps SAQ's dequeue as it is and changes what the sweep does:

- a job in the active list that is not marked ``active`` is only put back on its queue after
  it has sat there unchanged for ``settle`` seconds (its worker really died before starting
  it); the sweep remembers what it saw in ``saq:<queue>:sweep_seen``;
- every worker process holds a *lease* (``saq:<queue>:leases``: worker id -> expiry, in the
  server's clock), renewed by the queue every ``lost_after / 5`` seconds for as long as the
  queue is connected; a job marked ``active`` by a worker whose lease has lapsed is put back
  on its queue at once, instead of waiting for its timeout;
- every change the sweep makes is a compare-and-set on the job's stored bytes, so it never
  overwrites what a worker wrote in the meantime.

A worker takes jobs with ``take_active_many`` (several jobs in one script, each marked
active under its lease; the worker's free slots share each call, ``runtime.takes``) or
``take_active`` (one, then SAQ's blocking dequeue when the queue is empty), and finishes or
retries each with one fenced script; a successful finish may take the slot's next job in
the same script (``finish(..., take_next=...)``: one round trip per job while jobs wait).
A job taken for a slot that will not run it goes back
with ``put_back`` (a compare-and-set script: at the head of its queue, as it was before the
take, not counted as lost). Everything else (enqueue, abort, stats) is SAQ's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Collection, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any

import redis as redis_sync
from redis import exceptions as redis_errors
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from domainjobs.brokers._quiet import QuietLogs
from domainjobs.brokers.embedded import revive
from domainjobs.brokers.leases import LeaseHolder, TakenJob, job_not_held, lease_lost
from domainjobs.brokers.sweep import (
    LOST_AFTER,
    MAX_LOST,
    SETTLE,
    Verdict,
    give_up_error,
    mark_lost,
    verdict_for_active,
    verdict_for_unmarked,
)

if TYPE_CHECKING:
    from redis.asyncio.client import Redis
    from redis.commands.core import AsyncScript

logger = logging.getLogger("domainjobs")

#: A lapsed lease no job refers to any more is forgotten after this long (ms).
FORGET_LEASE_AFTER_MS = 3_600_000

#: The read buffer (bytes) of the lease-renewal thread's own connection.
LEASE_READ_SIZE = 4096

_SERVER_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: lock, active, leases, seen. ARGV: lock ms. Returns nil when another sweep holds
# the lock, else {now ms, ids, payloads, leases (flat), seen (flat)}.
SNAPSHOT = (
    """
if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) == false then return nil end
"""
    + _SERVER_NOW
    + """
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local payloads = {}
for i, id in ipairs(ids) do payloads[i] = redis.call('GET', id) end
return {now, ids, payloads, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""
)

# KEYS: leases. ARGV: ttl ms, worker ids... Writes each lease as now + ttl (server clock).
REGISTER = (
    _SERVER_NOW
    + """
for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], now + tonumber(ARGV[1])) end
return now
"""
)

_LIVE = """
local function live(id)
  local expiry = tonumber(redis.call('HGET', KEYS[1], id))
  return expiry ~= nil and expiry >= now
end
"""

# KEYS: leases. ARGV: ttl ms, worker ids... Extends each lease that is still live; returns
# the ids whose lease has lapsed (a lapsed lease never comes back).
RENEW = (
    _SERVER_NOW
    + _LIVE
    + """
local refused = {}
for i = 2, #ARGV do
  if live(ARGV[i]) then redis.call('HSET', KEYS[1], ARGV[i], now + tonumber(ARGV[1]))
  else refused[#refused + 1] = ARGV[i] end
end
return refused
"""
)

# KEYS: queued, active. Takes the next job (as SAQ's BLMOVE does, without blocking) and
# returns {id, bytes}, or nil when the queue is empty.
TAKE = """
local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not id then return nil end
return {id, redis.call('GET', id)}
"""

# KEYS: leases, queued, active. ARGV: lease, stamp ms (the worker's clock, as SAQ stamps
# jobs), how many jobs at most (default 1). Takes the next jobs, up to that many, and marks
# each active under the lease in one step: refused (0) before anything moves when the lease
# has lapsed; else one entry per job taken, in queue order (none: the queue is empty; fewer
# than asked: it ran dry): {id} when the job's key is gone (the sweep unlists it); {id, bytes}
# when its bytes are not a JSON object (the worker marks it itself); else {id, new bytes,
# length of the bytes before}. SAQ's bytes are kept as they are: the new top-level values are
# appended to the object (JSON readers keep the last of a repeated key), so no other value is
# re-encoded (and cutting the new bytes at the old length, plus '}', gives the old ones back:
# ``PUT_BACK``); cjson only reads the attempt count. One PUBLISH per job marked, as SAQ's.
# take(id, lease, stamp): marks the job ``id`` just moved to the active list as taken under
# the lease (see ``TAKE_ACTIVE``) and returns its entry.
_TAKE = """
local function take(id, lease, stamp)
  local payload = redis.call('GET', id)
  if not payload then return {id} end
  if string.sub(payload, 1, 1) ~= '{' or string.sub(payload, -1) ~= '}' then
    return {id, payload}
  end
  local ok, job = pcall(cjson.decode, payload)
  if not ok or type(job) ~= 'table' or next(job) == nil then return {id, payload} end
  local attempts = tonumber(job['attempts']) or 0
  local new = string.sub(payload, 1, -2) .. ', "status": "active", "started": ' .. stamp
    .. ', "touched": ' .. stamp .. ', "attempts": ' .. string.format('%d', attempts + 1)
    .. ', "worker_id": ' .. cjson.encode(lease) .. '}'
  redis.call('SET', id, new)
  redis.call('PUBLISH', id, 'active')
  return {id, new, #payload}
end
"""

TAKE_ACTIVE = (
    _SERVER_NOW
    + _LIVE
    + _TAKE
    + """
if not live(ARGV[1]) then return 0 end
local taken = {}
for n = 1, tonumber(ARGV[3] or '1') do
  local id = redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')
  if not id then break end
  taken[n] = take(id, ARGV[1], ARGV[2])
end
return taken
"""
)

# KEYS: active, queued, job ids... ARGV: for each job, the bytes its take left and their
# length before the take ('0': the take left them as they were). Puts jobs taken for slots
# that are gone back at the head of their queue, in their order, each only if nothing changed
# it since the take (compare-and-set on its bytes, which name the lease it was taken under
# and its attempt count: a sweep that put it back first, or any other write, wins) and it is
# still in the active list. Its bytes become the ones from before the take (the attempt it
# never made is not counted; it is not marked lost). Returns how many were put back.
PUT_BACK = """
local back = 0
for i = #KEYS, 3, -1 do
  local id = KEYS[i]
  local stored = ARGV[2 * (i - 2) - 1]
  local cut = tonumber(ARGV[2 * (i - 2)])
  if redis.call('GET', id) == stored and redis.call('LREM', KEYS[1], 0, id) > 0 then
    if cut > 0 then redis.call('SET', id, string.sub(stored, 1, cut - 1) .. '}') end
    redis.call('LREM', KEYS[2], 0, id)
    redis.call('LPUSH', KEYS[2], id)
    if cut > 0 then redis.call('PUBLISH', id, 'queued') end
    back = back + 1
  end
end
return back
"""

# The fenced writes a worker makes about a job it runs. Each returns 1 when written, 0 when
# refused (the lease ARGV[1] has lapsed), -1 when the job is no longer the worker's.

# KEYS: leases, job id, active, queued. ARGV: lease, bytes, status, '1' = a job just taken
# (must still be in the active list; put back at the head of its queue when refused).
UPDATE = (
    _SERVER_NOW
    + _LIVE
    + """
local taken = ARGV[4] == '1'
if not live(ARGV[1]) then
  if taken and redis.call('LREM', KEYS[3], 0, KEYS[2]) > 0 then
    redis.call('LREM', KEYS[4], 0, KEYS[2])
    redis.call('LPUSH', KEYS[4], KEYS[2])
  end
  return 0
end
if taken and not redis.call('LPOS', KEYS[3], KEYS[2]) then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""
)

# The fenced finish: KEYS: leases, job id, active, incomplete. ARGV: lease, bytes, ttl s,
# status. Refused (0) when the lease has lapsed; else the job is stored as finished.
_FINISH = """
if not live(ARGV[1]) then return 0 end
redis.call('LREM', KEYS[3], 1, KEYS[2])
redis.call('ZREM', KEYS[4], KEYS[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('SETEX', KEYS[2], ttl, ARGV[2])
elseif ttl == 0 then redis.call('SET', KEYS[2], ARGV[2])
else redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', KEYS[2], ARGV[4])
"""

FENCED_FINISH = _SERVER_NOW + _LIVE + _FINISH + "return 1\n"

# KEYS: leases, job id, active, incomplete, queued. ARGV: lease, bytes, ttl s, status, stamp
# ms. ``FENCED_FINISH``, then the next job taken for the same worker as ``TAKE_ACTIVE``
# takes it: 0 when refused (nothing written, nothing taken), else {} when the queue is
# empty or {entry} with ``TAKE_ACTIVE``'s entry of the job taken.
FINISH_TAKE = (
    _SERVER_NOW
    + _LIVE
    + _TAKE
    + _FINISH
    + """
local id = redis.call('LMOVE', KEYS[5], KEYS[3], 'LEFT', 'RIGHT')
if not id then return {} end
return {take(id, ARGV[1], ARGV[5])}
"""
)

# KEYS: leases, job id, active, queued, incomplete. ARGV: lease, bytes, score, '1' = queue
# it now (else it waits in the incomplete set until its retry delay is over), status.
FENCED_RETRY = (
    _SERVER_NOW
    + _LIVE
    + """
if not live(ARGV[1]) then return 0 end
redis.call('LREM', KEYS[3], 1, KEYS[2])
redis.call('LREM', KEYS[4], 1, KEYS[2])
redis.call('ZADD', KEYS[5], ARGV[3], KEYS[2])
if ARGV[4] == '1' then redis.call('RPUSH', KEYS[4], KEYS[2]) end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[5])
return 1
"""
)

# KEYS: incomplete, job id, queued, abort id, fired ticks. ARGV: bytes, scheduled, tick s,
# oldest accepted age s. SAQ's enqueue, for one cron tick: refused (-1) when the tick is
# older than the bound, or (0) when any process has offered it before.
ENQUEUE_TICK = (
    _SERVER_NOW
    + """
local seconds = now / 1000
local bound = tonumber(ARGV[4])
if tonumber(ARGV[3]) < seconds - bound then return -1 end
if redis.call('ZSCORE', KEYS[5], KEYS[2]) then return 0 end
redis.call('ZADD', KEYS[5], ARGV[3], KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', seconds - 10 * bound - 3600)
if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
  if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
  return 1
end
return 0
"""
)

# KEYS: job id, active, incomplete, queued. ARGV: expected bytes, new bytes ('' = keep),
# score. Puts the job back on its queue if nothing changed it since the sweep read it.
REQUEUE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('LREM', KEYS[2], 0, KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
redis.call('LREM', KEYS[4], 0, KEYS[1])
redis.call('RPUSH', KEYS[4], KEYS[1])
return 1
"""

# KEYS: job id, active, incomplete. ARGV: expected bytes, new bytes ('' = keep), ttl s.
# Finishes the job (or, with no new bytes, only unlists it) if nothing changed it.
FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LREM', KEYS[2], 0, KEYS[1])
if ARGV[2] == '' then return 1 end
redis.call('ZREM', KEYS[3], KEYS[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('SETEX', KEYS[1], ttl, ARGV[2])
elseif ttl == 0 then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('DEL', KEYS[1]) end
return 1
"""


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class SweepSafeRedisQueue(LeaseHolder, QuietLogs, RedisQueue):
    """A ``saq.queue.redis.RedisQueue`` whose sweep never loses a job (module docstring).

    ``lost_after``: seconds a worker's lease lasts without renewal (its jobs are put back
    once it lapses); ``settle``: seconds a taken-but-unstarted job may sit unchanged before
    it is put back; ``max_lost``: a job whose worker died this many times is given up.
    Every other argument is ``RedisQueue``'s.
    """

    transient_errors = (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        ConnectionError,
        OSError,
    )

    def __init__(
        self,
        redis: Redis,
        name: str = "default",
        *,
        lost_after: float = LOST_AFTER,
        settle: float = SETTLE,
        max_lost: int = MAX_LOST,
        **kwargs: Any,
    ) -> None:
        super().__init__(redis, name=name, **kwargs)
        self._configure_leases(lost_after, settle, max_lost)
        self._leases = self.namespace("leases")
        self._seen = self.namespace("sweep_seen")
        self._ticks = self.namespace("cron_ticks")
        self._scripts: dict[str, AsyncScript] = {}
        self._sync: redis_sync.Redis | None = None
        self._renew_sync: Any = None

    def _script(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.redis.register_script(source)
        return script

    # -- leases (the rest is LeaseHolder's) ---------------------------------------------

    async def _register_leases(self, worker_ids: list[str]) -> None:
        ttl_ms = int(self.lost_after * 1000)
        await self._script(REGISTER)(keys=[self._leases], args=[ttl_ms, *worker_ids])

    def _sync_client(self) -> redis_sync.Redis:
        if self._sync is None:
            pool = self.redis.connection_pool
            kind = getattr(redis_sync.connection, pool.connection_class.__name__, None)
            timeout = max(1.0, self.lost_after / 3)
            kwargs = {
                **pool.connection_kwargs,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                # the renewals' replies are a few bytes: hiredis' reader would otherwise
                # hold a 64 KiB buffer for the worker's whole life (longer replies are
                # still read whole, in several reads)
                "socket_read_size": LEASE_READ_SIZE,
            }
            self._sync = redis_sync.Redis(
                connection_pool=redis_sync.ConnectionPool(
                    connection_class=kind or redis_sync.connection.Connection, **kwargs
                )
            )
        return self._sync

    def _renew_leases_sync(self, worker_ids: list[str]) -> set[str]:
        client = self._sync_client()
        if self._renew_sync is None:
            self._renew_sync = client.register_script(RENEW)
        ttl_ms = int(self.lost_after * 1000)
        refused = self._renew_sync(keys=[self._leases], args=[ttl_ms, *worker_ids])
        return {r.decode() if isinstance(r, bytes) else str(r) for r in refused}

    def _close_sync(self) -> None:
        sync, self._sync, self._renew_sync = self._sync, None, None
        if sync is not None:
            sync.close()
            sync.connection_pool.disconnect()

    async def _end_leases(self, worker_ids: list[str]) -> None:
        await self.redis.hset(self._leases, mapping=dict.fromkeys(worker_ids, 0))  # type: ignore[misc]

    async def revive_broker(self) -> bool:
        """Start the embedded broker again if this queue uses it and its server is gone."""
        path = self.redis.connection_pool.connection_kwargs.get("path")
        if not path:
            return False
        return await asyncio.to_thread(revive, str(path))

    async def reclaim_orphans(self, worker_id: str, held: Callable[[], set[str]]) -> list[str]:
        """Put back the jobs marked active under ``worker_id`` that its worker no longer
        runs (``held()``: the ids of the jobs it runs now).

        After a broker restart, a server that lost its last writes (``appendfsync
        everysec``) may show a job the worker has finished as still ``active``: its lease is
        live, so the sweep would leave it there for good. The worker calls this once the
        broker is back. Each put-back is a compare-and-set, like the sweep's.
        """
        active = await self._active_payloads()
        running = held()  # after the read: a job taken since then is in it
        reclaimed = []
        for job_id, payload in active:
            if job_id in running:
                continue
            job = self.deserialize(payload)
            if job is None or job.status != Status.ACTIVE or job.worker_id != worker_id:
                continue
            if await self._carry_out(Verdict.REQUEUE, job, payload, 0):
                reclaimed.append(job.key)
        return reclaimed

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        """SAQ's dequeue, in one round trip while jobs are waiting (a script moves the next
        job to the active list and returns it); SAQ's blocking move when the queue is empty."""
        if await self.version() >= (6, 2, 0):
            taken = await self._script(TAKE)(keys=[self._queued, self._active], client=self.redis)
            if taken:  # {id} alone when the job's key is gone: the sweep unlists it
                return self.deserialize(taken[1]) if len(taken) > 1 else None
        return await super().dequeue(timeout, poll_interval)

    async def take_active(
        self, fence: str, timeout: float = 0.0, poll_interval: float = 0.0
    ) -> tuple[Job | None, bool]:
        """Take the next job and mark it active under the lease ``fence`` in one round trip
        (``TAKE_ACTIVE``); ``(job, True)`` when the job is marked already. When the queue is
        empty (or the server has no ``LMOVE``), SAQ's blocking dequeue: ``(job, False)``,
        and the worker marks the job itself. Raises ``LeaseLostError`` when the lease has
        lapsed (nothing is taken then)."""
        if fence in self.lost_leases:
            raise lease_lost(fence)
        if await self.version() >= (6, 2, 0):
            entries = await self._take_active(fence, 1)
            if entries:
                taken = entries[0]  # None: the job's key is gone (the sweep unlists it)
                return (taken.job, taken.marked) if taken is not None else (None, False)
        return await RedisQueue.dequeue(self, timeout, poll_interval), False

    async def take_active_many(self, fence: str, count: int) -> list[TakenJob]:
        """Take up to ``count`` jobs and mark each active under the lease ``fence``, in one
        round trip (``TAKE_ACTIVE``; fewer when the queue runs dry, none when it is empty or
        the server has no ``LMOVE``). Never blocks. Raises ``LeaseLostError`` when the lease
        has lapsed (nothing is taken then). A job taken here that no slot will run goes back
        with ``put_back``."""
        if fence in self.lost_leases:
            raise lease_lost(fence)
        if await self.version() < (6, 2, 0):
            return []
        return [taken for taken in await self._take_active(fence, count) if taken is not None]

    async def wait_for_job(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        """SAQ's blocking dequeue (``BLMOVE``, up to ``timeout`` seconds; 0: no limit),
        without a take script first: for a worker that has just found the queue empty
        (``take_active_many``). The job is not marked: the worker marks it itself."""
        return await RedisQueue.dequeue(self, timeout, poll_interval)

    async def _take_active(self, fence: str, count: int) -> list[TakenJob | None]:
        """``TAKE_ACTIVE``'s entries; ``None`` for a job whose key is gone."""
        entries = await self._script(TAKE_ACTIVE)(
            keys=[self._leases, self._queued, self._active],
            args=[fence, now(), count],
            client=self.redis,
        )
        if entries == 0:
            raise self.refused(fence)
        return self._entries(fence, entries)

    def _entries(self, fence: str, entries: list[list[bytes]]) -> list[TakenJob | None]:
        """The take script's entries as ``TakenJob``s; ``None`` for a job whose key is gone."""
        taken: list[TakenJob | None] = []
        for entry in entries:
            job = self.deserialize(entry[1]) if len(entry) > 1 else None
            if job is None:
                taken.append(None)
            elif len(entry) > 2:
                taken.append(TakenJob(job, True, fence, entry[1], int(entry[2])))
            else:
                taken.append(TakenJob(job, False, fence, entry[1], 0))
        return taken

    async def put_back(self, taken: Sequence[TakenJob]) -> int:
        """Put jobs taken by ``take_active_many`` that no slot will run back at the head of
        their queue, in their order, as they were before the take (not counted as lost, no
        attempt counted), in one round trip (``PUT_BACK``: a compare-and-set on each job's
        bytes, so a job anything else wrote to since, e.g. a sweep, is left alone). Returns
        how many went back."""
        if not taken:
            return 0
        args: list[bytes | int] = []
        for each in taken:
            args += [each.stored, each.cut]
        back = await self._script(PUT_BACK)(
            keys=[self._active, self._queued, *(each.job.id for each in taken)],
            args=args,
            client=self.redis,
        )
        return int(back)

    async def _active_payloads(self) -> list[tuple[str, bytes]]:
        """Every job in the active list that still exists: its id and stored bytes."""
        ids = await self.redis.lrange(self._active, 0, -1)  # type: ignore[misc]
        payloads = await self.redis.mget(ids) if ids else []
        return [(i.decode(), p) for i, p in zip(ids, payloads, strict=True) if p is not None]

    async def put_back_strays(self, fence: str, held: Collection[str]) -> int:
        """Put back the jobs a take marked active under the lease ``fence`` that the worker
        never got: a take whose reply was lost (its slot was cancelled while a finish that
        takes the next job was on its way). ``held``: ids of the jobs the worker runs or
        holds. Such a job is recognised by the values the take appended to its bytes, which
        name ``fence``; it goes back as ``put_back`` puts jobs back. Returns how many."""
        appended = re.compile(
            rb', "status": "active", "started": \d+, "touched": \d+, "attempts": \d+, '
            rb'"worker_id": ' + re.escape(json.dumps(fence).encode()) + rb"\}$"
        )
        strays = []
        for job_id, payload in await self._active_payloads():
            found = appended.search(payload) if job_id not in held else None
            job = self.deserialize(payload) if found else None
            if found and job is not None:
                strays.append(TakenJob(job, True, fence, payload, found.start() + 1))
        return await self.put_back(strays)

    # -- fenced writes (the worker's, while ``FENCE`` is set) ----------------------------

    def _outcome(self, done: int, fence: str, job: Job) -> None:
        if done == 0:
            raise self.refused(fence)
        if done < 0:
            raise job_not_held(job)

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        fence = self.fence()
        if fence is None:
            await super()._update(job, status, **kwargs)
            return
        if not status:
            stored = await self.job(job.key)
            status = stored.status if stored else None
        job.status = status or job.status
        done = await self._script(UPDATE)(
            keys=[self._leases, job.id, self._active, self._queued],
            args=[fence, self.serialize(job), job.status, "1" if status == Status.ACTIVE else ""],
            client=self.redis,
        )
        self._outcome(int(done), fence, job)

    async def _finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        take_next: MutableSequence[TakenJob] | None = None,
    ) -> None:
        """SAQ's finish, fenced on the worker's lease. With ``take_next`` (a worker's list of
        jobs taken ahead), the same script also takes the queue's next job for that worker,
        marked active under the same lease, and appends it to the list: a slot that goes
        on then needs no take of its own (``FINISH_TAKE``)."""
        fence = self.fence()
        if fence is None:
            await super()._finish(job, status, result=result, error=error)
            return
        if take_next is None:
            done = await self._script(FENCED_FINISH)(
                keys=[self._leases, job.id, self._active, self._incomplete],
                args=[fence, self.serialize(job), job.ttl, job.status],
                client=self.redis,
            )
            self._outcome(int(done), fence, job)
            return
        outcome = await self._script(FINISH_TAKE)(
            keys=[self._leases, job.id, self._active, self._incomplete, self._queued],
            args=[fence, self.serialize(job), job.ttl, job.status, now()],
            client=self.redis,
        )
        if outcome == 0:
            raise self.refused(fence)
        take_next.extend(taken for taken in self._entries(fence, outcome) if taken is not None)

    async def _retry(self, job: Job, error: str | None) -> None:
        fence = self.fence()
        if fence is None and job.next_retry_delay():
            await super()._retry(job, error)
            return
        if fence is None:  # SAQ's retry, but queued with score 0 (see the sweep's put-back)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrem(self._active, 1, job.id)
                pipe.lrem(self._queued, 1, job.id)
                pipe.zadd(self._incomplete, {job.id: 0})
                pipe.rpush(self._queued, job.id)
                pipe.set(job.id, self.serialize(job))
                await pipe.execute()
            await self.notify(job)
            return
        delay = job.next_retry_delay()
        score = time.time() + delay if delay else 0  # 0: queued now (see the sweep's put-back)
        done = await self._script(FENCED_RETRY)(
            keys=[self._leases, job.id, self._active, self._queued, self._incomplete],
            args=[fence, self.serialize(job), score, "" if delay else "1", job.status],
            client=self.redis,
        )
        self._outcome(int(done), fence, job)

    # -- cron ticks -------------------------------------------------------------------------

    async def enqueue_tick(self, job: Job, tick: int, bound: float) -> bool:
        """Enqueue cron ``job`` for ``tick`` (epoch s) unless any process offered that tick
        before, or the tick is more than ``bound`` seconds old in the broker's clock."""
        job.queue = self
        job.queued = now()
        job.status = Status.QUEUED
        await self._before_enqueue(job)
        done = await self._script(ENQUEUE_TICK)(
            keys=[self._incomplete, job.id, self._queued, job.abort_id, self._ticks],
            args=[self.serialize(job), job.scheduled, tick, bound],
            client=self.redis,
        )
        return int(done) == 1

    # -- the sweep ------------------------------------------------------------------------

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """Put back the jobs of dead workers, finish stuck jobs as SAQ does; lose none.

        At most one sweep per ``lock`` seconds runs across all workers of the queue.
        """
        lock_ms = max(1, int(float(lock) * 1000))
        snapshot = await self._script(SNAPSHOT)(
            keys=[self._sweep, self._active, self._leases, self._seen],
            args=[lock_ms],
            client=self.redis,
        )
        if not snapshot:
            return []
        self.sweeps_run += 1
        now_ms, ids, payloads, lease_flat, seen_flat = snapshot
        leases = {k.decode(): int(v) for k, v in _pairs(lease_flat).items()}
        seen = _pairs(seen_flat)
        next_seen: dict[bytes, bytes] = {}
        referenced: set[str] = set()
        swept: list[str] = []
        for job_id, payload in zip(ids, payloads, strict=True):
            try:
                if await self._sweep_one(
                    job_id, payload, int(now_ms), leases, seen, next_seen, referenced, abort
                ):
                    swept.append(job_id.decode())
            except Exception:  # one bad job must not stop the sweep
                logger.exception("sweeping %s failed", job_id)
        await self._remember(seen, next_seen, leases, referenced, int(now_ms))
        return swept

    async def _sweep_one(
        self,
        job_id: bytes,
        payload: bytes | None,
        now_ms: int,
        leases: dict[str, int],
        seen: dict[bytes, bytes],
        next_seen: dict[bytes, bytes],
        referenced: set[str],
        abort: float,
    ) -> bool:
        if payload is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrem(self._active, 0, job_id.decode())
                pipe.zrem(self._incomplete, job_id.decode())
                await pipe.execute()
            logger.info("Sweeping missing job %s", job_id)
            return True
        job = self.deserialize(payload)
        if job is None:
            return False
        if job.status == Status.ACTIVE:
            lease = leases.get(job.worker_id or "")
            if job.worker_id:
                referenced.add(job.worker_id)
            verdict = verdict_for_active(
                job,
                lease_lapsed=lease is not None and lease < now_ms,
                lease_live=lease is not None and lease >= now_ms,
                now_ms=now(),  # job stamps are the workers' clocks, as in SAQ
                settle=self.settle,
                max_lost=self.max_lost,
            )
        else:
            fingerprint = hashlib.sha1(payload).hexdigest().encode()
            first_ms, _, previous = seen.get(job_id, b"").partition(b" ")
            first = int(first_ms) if previous == fingerprint else now_ms
            next_seen[job_id] = b"%d %s" % (first, fingerprint)
            verdict = verdict_for_unmarked(
                job, unchanged_for=(now_ms - first) / 1000, settle=self.settle
            )
        if verdict is Verdict.KEEP:
            return False
        next_seen.pop(job_id, None)
        return await self._carry_out(verdict, job, payload, abort)

    async def _carry_out(self, verdict: Verdict, job: Job, payload: bytes, abort: float) -> bool:
        if verdict is Verdict.STUCK:
            await self._sweep_stuck(job, abort)
            return True
        if verdict is Verdict.REQUEUE:
            new = b""
            if job.status == Status.ACTIVE:
                mark_lost(job, job.worker_id)
                new = self._bytes(job)
            done = await self._script(REQUEUE)(
                keys=[job.id, self._active, self._incomplete, self._queued],
                # score 0: queued now (as SAQ's scheduler leaves a due job); a job's own
                # ``scheduled`` time would make the scheduler queue it a second time
                args=[payload, new, 0],
                client=self.redis,
            )
            if done:
                self.retried += 1
                logger.warning("Put back %s (its worker is gone)", job.info())
        else:
            new = b""
            if verdict is not Verdict.UNLIST:
                error = give_up_error(job) if verdict is Verdict.GIVE_UP else job.error
                job.status, job.error, job.completed = Status.ABORTED, error, now()
                new = self._bytes(job)
            done = await self._script(FINISH)(
                keys=[job.id, self._active, self._incomplete],
                args=[payload, new, job.ttl],
                client=self.redis,
            )
            if done and new:
                self.aborted += 1
                logger.warning("Finished %s as aborted (%s)", job.info(), job.error)
        if done and new:
            await self.notify(job)
        return bool(done)

    def _bytes(self, job: Job) -> bytes:
        data = self.serialize(job)
        return data.encode() if isinstance(data, str) else data

    async def _remember(
        self,
        seen: dict[bytes, bytes],
        next_seen: dict[bytes, bytes],
        leases: dict[str, int],
        referenced: set[str],
        now: int,
    ) -> None:
        forget = [k for k in seen if k not in next_seen]
        stale = [
            w
            for w, expiry in leases.items()
            if expiry < now - FORGET_LEASE_AFTER_MS and w not in referenced
        ]
        if not (forget or next_seen or stale):
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            if forget:
                pipe.hdel(self._seen, *(k.decode() for k in forget))
            if next_seen:
                pipe.hset(
                    self._seen, mapping={k.decode(): v.decode() for k, v in next_seen.items()}
                )
            if stale:
                pipe.hdel(self._leases, *stale)
            await pipe.execute()
