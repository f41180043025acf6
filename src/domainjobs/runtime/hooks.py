"""Run a registry's startup and shutdown hooks once per worker process, however many
``saq.Worker``s (one per queue) that process runs.

Every worker built from one ``HookRunner`` gets ``runner.startup`` and ``runner.shutdown``
as its SAQ lifecycle functions. The first worker to start runs the startup hooks; the
others wait for them and receive what they put into the context. The last worker to stop
runs the shutdown hooks in reverse order, each one even when another raised.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Sequence
from typing import Any

from domainjobs.registry import HookSpec

logger = logging.getLogger("domainjobs")


async def call_hook(hook: HookSpec, ctx: dict[str, Any]) -> None:
    """Call one hook with the context: awaited if async, in a thread if plain."""
    if inspect.iscoroutinefunction(hook.function):
        await hook.function(ctx)
    else:
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(hook.function, ctx)
        )


class HookRunner:
    """Shared lifecycle of the workers of one process (see the module docstring)."""

    def __init__(self, startup: Sequence[HookSpec], shutdown: Sequence[HookSpec]) -> None:
        self.startup_hooks = tuple(startup)
        self.shutdown_hooks = tuple(shutdown)
        self.failed_shutdown_hooks: list[str] = []
        self._shared: dict[str, Any] = {}
        self._hook_context: dict[str, Any] | None = None
        self._unready_domains: set[str] = set()
        self._started: asyncio.Future[None] | None = None
        self._users = 0

    async def startup(self, ctx: dict[str, Any]) -> None:
        """SAQ startup function: run the hooks once, share their context additions."""
        self._users += 1
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._hook_context = ctx
            self._unready_domains = {hook.domain for hook in self.startup_hooks}
            before = dict(ctx)
            try:
                await self._run_startup_hooks(ctx)
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # mark retrieved: the raise below reports it
                raise
            self._shared = {k: v for k, v in ctx.items() if k not in before or before[k] is not v}
            self._started.set_result(None)
            return
        await asyncio.shield(self._started)
        ctx.update(self._shared)

    async def _run_startup_hooks(self, ctx: dict[str, Any]) -> None:
        for index, hook in enumerate(self.startup_hooks):
            try:
                await call_hook(hook, ctx)
            except Exception:
                logger.exception(
                    "startup hook %s of domain '%s' (%s) raised; the worker does not start",
                    hook.name,
                    hook.domain,
                    hook.origin,
                )
                raise
            later = self.startup_hooks[index + 1 :]
            if all(other.domain != hook.domain for other in later):
                self._unready_domains.discard(hook.domain)  # every hook of it has run

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        """SAQ shutdown function: the last worker of the process runs the hooks.

        They run with the context the startup hooks filled. After a failed startup, the
        shutdown hooks of a domain whose startup hooks did not all run are skipped: what
        they would close was never opened.
        """
        self._users -= 1
        if self._users > 0 or self._started is None:
            return
        context = self._hook_context if self._hook_context is not None else ctx
        for hook in self.shutdown_hooks:
            if hook.domain in self._unready_domains:
                logger.warning(
                    "shutdown hook %s skipped: domain '%s' did not finish starting",
                    hook.name,
                    hook.domain,
                )
                continue
            try:
                await call_hook(hook, context)
            except Exception:
                self.failed_shutdown_hooks.append(hook.name)
                logger.exception(
                    "shutdown hook %s of domain '%s' (%s) raised",
                    hook.name,
                    hook.domain,
                    hook.origin,
                )
        self._started = None
        self._hook_context = None
