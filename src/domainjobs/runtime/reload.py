"""``domainjobs run --reload``: restart the worker processes when a Python file under the
app directory changes (extra ``reload``, watchfiles), like ``uvicorn --reload``.

For development only: the workers are stopped gracefully (running jobs finish or are
re-queued) and started afresh, so they rediscover every domain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from domainjobs.errors import ConfigError

logger = logging.getLogger("domainjobs.runtime.reload")


def ensure_available() -> None:
    """A ``ConfigError`` when watchfiles (the ``reload`` extra) is not installed."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--reload needs the 'reload' extra (watchfiles): pip install 'domainjobs[reload]'"
        ) from None


async def watch(app_dir: str, on_change: Callable[[str], None], stop: asyncio.Event) -> None:
    """Call ``on_change(description)`` after each batch of ``*.py`` changes under ``app_dir``."""
    from watchfiles import PythonFilter, awatch

    root = Path(app_dir)  # absolute: the caller resolved it
    logger.info("watching %s for changes to Python files (--reload)", root)
    async for changes in awatch(root, watch_filter=PythonFilter(), stop_event=stop):
        paths = sorted({Path(path) for _, path in changes})
        shown = ", ".join(
            str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths[:3]
        )
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        on_change(f"{shown}{more} changed")
