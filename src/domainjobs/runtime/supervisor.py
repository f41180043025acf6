"""A small process supervisor for ``domainjobs run --processes N``.

It starts N copies of one command (``python -m domainjobs run --supervised-by PID ...``:
fresh interpreters that rediscover from the same settings, nothing pickled), and:

- restarts a child that dies unexpectedly, after a backoff (0.5 s, doubling up to 30 s
  while children keep dying within 10 s of their start), logging its exit status or signal;
- restarts a child that exits 0 on its own at once (it recycled itself after
  ``--max-jobs``), except in burst mode, where exit 0 means "drained";
- stops for good when a child exits 2 (a configuration or discovery error: restarting
  cannot help), and then exits 2 itself;
- forwards SIGINT/SIGTERM to every child (a second signal is forwarded too: the children
  then stop at once), waits for them, and exits 0 when they all stopped cleanly, else 1;
- restarts every child on demand (:meth:`Supervisor.restart_all`, used by ``--reload``).

Children run in their own session, so a terminal's Ctrl-C reaches them once, through the
supervisor; each child also stops by itself when the supervisor disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping, Sequence

from domainjobs.errors import ExitCode

logger = logging.getLogger("domainjobs.runtime.supervisor")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def describe_exit(returncode: int) -> str:
    """``exited with status 3`` or ``killed by signal SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exited with status {returncode}"


class Supervisor:
    """Keep ``processes`` copies of ``command`` running until stopped (module docstring)."""

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        burst: bool = False,
        restart_on_usage_error: bool = False,
        backoff_start: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
    ) -> None:
        self.command = list(command)
        self.processes = processes
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.burst = burst
        self.restart_on_usage_error = restart_on_usage_error
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stop = asyncio.Event()
        self._signals_seen = 0
        self._restart_requested: set[int] = set()
        self._fatal = 0
        self._final: dict[int, int] = {}
        self._wake = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop: forward ``signum`` to every child (again on a second call)."""
        self._signals_seen += 1
        if self._signals_seen == 1:
            logger.info(
                "stopping %d worker process(es) (%s)",
                len(self.children),
                signal.Signals(signum).name,
            )
        self._stop.set()
        self._send_all(signum)

    def restart_all(self, reason: str) -> None:
        """Gracefully restart every child (for ``--reload``)."""
        if self.stopping:
            return
        logger.info("%s: restarting %d worker process(es)", reason, len(self.children))
        for slot, process in self.children.items():
            if process.returncode is None:
                self._restart_requested.add(slot)
        self._send_all(signal.SIGTERM)
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()  # children waiting out a backoff start now

    def _send_all(self, signum: int) -> None:
        for process in list(self.children.values()):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until stopped; the exit status (0 clean, 1 a child failed, 2 fatal error)."""
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for signum in STOP_SIGNALS:
                try:
                    loop.add_signal_handler(signum, self.stop, signum)
                    installed.append(signum)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            slots = [asyncio.create_task(self._keep(slot)) for slot in range(1, self.processes + 1)]
            await asyncio.gather(*slots)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self.stop_now()
        if self._fatal:
            return self._fatal
        return 0 if all(code == 0 for code in self._final.values()) else 1

    def stop_now(self) -> None:
        """Kill any child still running (the supervisor itself is going away)."""
        for process in self.children.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def _keep(self, slot: int) -> None:
        failures = 0
        while not self.stopping:
            process = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, cwd=self.cwd, start_new_session=True
            )
            self.children[slot] = process
            if self.stopping:  # a signal came while it was starting
                process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            logger.info("worker process %d started (pid %d)", slot, process.pid)
            returncode = await process.wait()
            lived = time.monotonic() - started
            self._final[slot] = returncode
            what = f"worker process {slot} (pid {process.pid}) {describe_exit(returncode)}"
            if self.stopping:
                if returncode in (-signal.SIGTERM, -signal.SIGINT, 130):
                    returncode = 0  # stopped by our signal before it could handle it: no job yet
                self._final[slot] = returncode
                log = logger.info if returncode == 0 else logger.warning
                log("%s", what)
                return
            if slot in self._restart_requested:
                self._restart_requested.discard(slot)
                failures = 0
                continue
            if returncode == 0:
                if self.burst:
                    logger.info("%s: its queues are drained", what)
                    return
                logger.info("%s (recycled); starting a new one", what)
                failures = 0
                continue
            if returncode == ExitCode.USAGE and not self.restart_on_usage_error:
                logger.error("%s (a configuration or discovery error): stopping", what)
                self._fatal = ExitCode.USAGE
                self.stop()
                return
            failures = failures + 1 if lived < self.stable_after else 1
            delay = min(self.backoff_max, self.backoff_start * 2 ** (failures - 1))
            logger.error("%s unexpectedly; restarting it in %.1fs", what, delay)
            self.restarts += 1
            waits = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._wake.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
