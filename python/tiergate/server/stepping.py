"""Step an async iterator without waiting when its next item is already there.

A provider's network chunk usually carries several stream events. Writing each event's
frame to the caller as its own send costs one system call per event; waiting on each
``anext`` under a timer costs a timer per event. :func:`step` runs the iterator's next
step synchronously: when that completes without suspending (the event was already
parsed), the item comes back at once; only when it would suspend is the caller told to
flush what it has batched and then await the rest under its timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Pending", "step"]

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

    def close(self) -> None:
        self._it.close()


def step(iterator: AsyncIterator[T]) -> tuple[bool, T | Pending[T]]:
    """``(True, item)`` when the next item was ready without suspending, else
    ``(False, pending)``. Raises what the iterator raises (StopAsyncIteration at the end)."""
    it = iterator.__anext__().__await__()
    try:
        first = it.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, Pending(it, first)
