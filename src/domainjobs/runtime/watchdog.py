"""A watchdog thread that notices when the event loop stops running (a task called blocking
code, such as ``time.sleep``, in an ``async def``) and says, once per episode, what blocked
it and for how long.

The worker's leases are renewed from their own thread, so a blocked loop does not make other
workers take this process's jobs; but every job of the process waits while the loop is
blocked, and that is worth one clear log line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import types
from collections.abc import Callable

logger = logging.getLogger("domainjobs")

#: A loop that has not run for this long (seconds) counts as blocked.
BLOCKED_AFTER = 2.0


class LoopWatchdog:
    """Watch the running event loop from a daemon thread (``start``/``stop``).

    ``describe(frame)`` names what the loop's thread is running in ``frame`` (e.g. the job
    whose task blocks it), or returns ``None``.
    """

    def __init__(
        self,
        describe: Callable[[types.FrameType | None], str | None],
        *,
        blocked_after: float = BLOCKED_AFTER,
    ) -> None:
        self.describe = describe
        self.blocked_after = blocked_after
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.last_beat = time.monotonic()
        self.episodes: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="domainjobs-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (does not wait for the thread)."""
        self._stop.set()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def _watch(self) -> None:
        interval = self.blocked_after / 8
        culprit: str | None = None
        since = 0.0
        while not self._stop.wait(interval):
            try:
                self.loop.call_soon_threadsafe(self._beat)
            except RuntimeError:  # the loop is closed
                return
            lag = time.monotonic() - self.last_beat
            if culprit is None and lag > self.blocked_after:
                since = self.last_beat
                frame = sys._current_frames().get(self.loop_thread)
                culprit = self.describe(frame) or "code outside any job (a hook or the worker)"
            elif culprit is not None and lag <= interval * 2:
                blocked = self.last_beat - since
                self.episodes.append((culprit, blocked))
                logger.warning(
                    "the event loop was blocked for %.1fs by %s: every other job of this "
                    "process waited meanwhile; run blocking code in a plain def task or "
                    "with asyncio.to_thread",
                    blocked,
                    culprit,
                )
                culprit = None
