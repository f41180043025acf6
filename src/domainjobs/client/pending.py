"""Awaitables returned by ``Jobs.apply`` and ``Jobs.map``, typed so that awaiting them gives
the task's result type.

A task's declared return type is ``R`` for a plain function and a coroutine of ``R`` for an
``async def`` one. Two overloads of ``apply`` (one per kind) would make mypy give up and
answer ``Any`` whenever the task's context parameter is unannotated or holds ``Any`` (that
is, nearly always). So ``apply`` has one overload for functions and returns a
``Pending[<declared return>]`` whose ``__await__`` unwraps an awaitable on its own type.
Nothing runs until the object is awaited, like a coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from domainjobs.errors import JobFailedError

R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")

Start = Callable[[], Coroutine[Any, Any, Any]]


class _Lazy:
    """Starts its coroutine on first use; quacks like a coroutine, so that
    ``asyncio.create_task(jobs.apply(...))`` works as well as ``await``."""

    __slots__ = ("_coroutine", "_start")

    def __init__(self, start: Start) -> None:
        self._start = start
        self._coroutine: Coroutine[Any, Any, Any] | None = None

    def _get(self) -> Coroutine[Any, Any, Any]:
        if self._coroutine is None:
            self._coroutine = self._start()
        return self._coroutine

    def _run(self) -> Generator[Any, None, Any]:
        return self._get().__await__()

    def send(self, value: Any) -> Any:
        """Coroutine protocol (for ``asyncio.create_task``)."""
        return self._get().send(value)

    def throw(self, *args: Any) -> Any:
        """Coroutine protocol (for ``asyncio.create_task``)."""
        return self._get().throw(*args)

    def close(self) -> None:
        """Coroutine protocol: close the coroutine if it was started."""
        if self._coroutine is not None:
            self._coroutine.close()


class Pending(_Lazy, Generic[R_co]):
    """``await`` it for the result of one job (``Jobs.apply``)."""

    __slots__ = ()

    @overload
    def __await__(self: Pending[Awaitable[T]]) -> Generator[Any, None, T]: ...
    @overload
    def __await__(self: Pending[T]) -> Generator[Any, None, T]: ...
    def __await__(self) -> Generator[Any, None, Any]:
        return self._run()


class PendingList(_Lazy, Generic[R_co]):
    """``await`` it for the results of many jobs, in order (``Jobs.map``)."""

    __slots__ = ()

    @overload
    def __await__(self: PendingList[Awaitable[T]]) -> Generator[Any, None, list[T]]: ...
    @overload
    def __await__(self: PendingList[T]) -> Generator[Any, None, list[T]]: ...
    def __await__(self) -> Generator[Any, None, Any]:
        return self._run()


class PendingListWithErrors(_Lazy, Generic[R_co]):
    """``await`` it for results or ``JobFailedError``s, in order (``map(...,
    return_exceptions=True)``)."""

    __slots__ = ()

    @overload
    def __await__(
        self: PendingListWithErrors[Awaitable[T]],
    ) -> Generator[Any, None, list[T | JobFailedError]]: ...
    @overload
    def __await__(
        self: PendingListWithErrors[T],
    ) -> Generator[Any, None, list[T | JobFailedError]]: ...
    def __await__(self) -> Generator[Any, None, Any]:
        return self._run()


for _kind in (Pending, PendingList, PendingListWithErrors):
    Coroutine.register(_kind)
