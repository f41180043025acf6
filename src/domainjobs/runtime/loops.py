"""Which asyncio event loop ``domainjobs run`` uses: uvloop when the ``speed`` extra is
installed (``--loop auto``, the default), else the standard one."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from domainjobs.errors import ConfigError

T = TypeVar("T")

LOOPS = ("auto", "asyncio", "uvloop")


def uvloop_available() -> bool:
    """Whether uvloop can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_name(choice: str = "auto") -> str:
    """``uvloop`` or ``asyncio``: what ``choice`` means on this machine."""
    if choice not in LOOPS:
        raise ConfigError(f"--loop must be one of {', '.join(LOOPS)}, got {choice!r}")
    if choice == "uvloop" and not uvloop_available():
        raise ConfigError("--loop uvloop needs the 'speed' extra: pip install 'domainjobs[speed]'")
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    return choice


def run(coro: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(coro)`` on the chosen loop."""
    if loop_name(choice) == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
