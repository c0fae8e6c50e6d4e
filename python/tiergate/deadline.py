"""A deadline for one wait that usually ends well before it."""

from __future__ import annotations

import asyncio

__all__ = ["Deadline"]


class Deadline:
    """``asyncio.timeout`` for one wait that usually ends well before it: one timer
    handle that cancels the waiting task, and nothing more (``asyncio.timeout_at`` cost
    about 20k instructions per stream). Use as::

        guard = Deadline(seconds)
        try:
            ...  # the awaits it bounds
        except asyncio.CancelledError:
            guard.check()  # raises TimeoutError when the deadline did the cancelling
            raise
        finally:
            guard.cancel()

    As ``asyncio.Timeout``, a cancellation that also came from elsewhere (the caller
    left, shutdown) stays a cancellation.
    """

    __slots__ = ("_cancelling", "_handle", "_task", "expired")

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "Deadline is used inside a task"
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = task.get_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def check(self) -> None:
        if self.expired and self._task.uncancel() <= self._cancelling:
            raise TimeoutError

    def cancel(self) -> None:
        self._handle.cancel()
