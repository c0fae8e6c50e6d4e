"""Step an async iterator without waiting when its next item is already there.

A provider's network chunk usually carries several stream events. Writing each event's
frame to the caller as its own send costs one system call per event; waiting on each
``anext`` under a timer costs a timer per event. :func:`step` runs the iterator's next
step synchronously: when that completes without suspending (the event was already
parsed), the item comes back at once; only when it would suspend is the caller told to
flush what it has batched and then await the rest under its timeout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Pending", "start", "step"]

T = TypeVar("T")


class Pending(Generic[T]):
    """The rest of a step that suspended: await it (at most once) to get the item."""

    __slots__ = ("_first", "_it")

    def __init__(self, it: Generator[Any, Any, T], first: Any) -> None:
        self._it = it
        self._first = first

    def __await__(self) -> Generator[Any, Any, T]:
        # Delegate to the suspended coroutine as `yield from` would, forwarding what the
        # event loop sends or throws (a cancellation from a timeout, for instance).
        it, pending = self._it, self._first
        while True:
            try:
                value = yield pending
            except BaseException as exc:
                try:
                    pending = it.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                continue
            try:
                pending = it.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """End the step, and the iterator with it, its ``finally`` blocks run to their
        end (awaits included). Not by GeneratorExit: thrown into a frame that awaits
        another async generator's step, CPython closes that step rather than throwing
        into it, and on 3.11 a closed step leaves its generator marked running (its
        ``aclose()`` then fails, and the loop's finalizer logs the failure). A private
        BaseException passes down the whole chain (``except Exception`` lets it by)."""
        it = self._it
        try:
            first = it.throw(_Abandoned())
        except (_Abandoned, StopIteration, StopAsyncIteration):
            return  # ended at once (or the step had already ended)
        with contextlib.suppress(_Abandoned, StopAsyncIteration):
            await Pending(it, first)  # a cleanup that awaits, driven to its end


class _Abandoned(BaseException):
    """Thrown into a step that will never be awaited, to end it (see Pending.aclose)."""


def step(iterator: AsyncIterator[T]) -> tuple[bool, T | Pending[T]]:
    """``(True, item)`` when the next item was ready without suspending, else
    ``(False, pending)``. Raises what the iterator raises (StopAsyncIteration at the end)."""
    it = iterator.__anext__().__await__()
    try:
        first = it.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, Pending(it, first)


def start(awaitable: Awaitable[object]) -> Pending[object] | None:
    """Run ``awaitable`` (a send, say) until it first suspends: None when it finished
    without waiting (its result dropped), else the rest to await, so that only a send
    that must wait (a caller not reading) is given a timer."""
    it = awaitable.__await__()
    try:
        first = it.send(None)
    except StopIteration:
        return None
    return Pending(it, first)
