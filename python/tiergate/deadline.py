"""A deadline for one wait that usually ends well before it."""

from __future__ import annotations

import asyncio
from asyncio import current_task
from heapq import heapify, heappop, heappush
from typing import ClassVar

__all__ = ["Deadline"]

# A timer that fires this much before its time is on time (uvloop's timers count whole
# milliseconds; asyncio runs handles within its clock resolution of their time).
_RESOLUTION_S = 0.001
# A keeper's heap is compacted when it holds more entries than this (or than twice the
# live deadlines of its last compaction).
_COMPACT_AT = 1024


class Deadline:
    """``asyncio.timeout`` for one wait that usually ends well before it: the waiting
    task is cancelled once the time has passed, and nothing more. Use as::

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

    Deadlines share one timer per event loop (:class:`_Keeper`), armed about once per
    deadline length: a uvloop timer handle of its own (``call_later``, then its cancel)
    made a deadline cost ~9k instructions, the shared one ~4.6k (``asyncio.timeout_at``
    cost ~20k).

    A task that waits again and again (a stream, between its chunks) keeps one deadline
    and calls :meth:`rearm` before each further wait: a few stores, where a new deadline
    costs a heap push (a third of what the relay loop spends on a chunk).
    """

    __slots__ = ("_cancelling", "_keeper", "_queued", "_task", "done", "expired", "when")

    def __init__(self, seconds: float) -> None:
        task = current_task()
        assert task is not None, "Deadline is used inside a task"
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = self.done = False
        self._queued: bool  # set below, once its entry is in the heap
        loop = task.get_loop()
        keeper = _Keeper.current
        if keeper is None or keeper.loop is not loop:
            keeper = _Keeper.current = _Keeper(loop)
        self._keeper = keeper
        self.when = when = loop.time() + seconds
        # Inline (not a call to the keeper): this runs for every wait it bounds.
        heap = keeper.heap
        while heap and heap[0][2].done:  # ended deadlines on top leave first
            heappop(heap)[2]._queued = False
        # The id: no two deadlines compared (a deadline has one entry at most).
        heappush(heap, (when, id(self), self))
        self._queued = True
        if len(heap) > keeper.limit:
            keeper.compact()
        if when < keeper.armed:
            keeper.arm(when)

    def rearm(self, seconds: float) -> None:
        """Bound the task's next wait by ``seconds`` from now, after :meth:`cancel`
        ended the last one. Never earlier than the deadline's last time (a later time
        only moves a field; the keeper, finding the entry early, puts it back): callers
        bound each wait by ``min(overall end, now + gap)``, which does not go back, and
        the loop's clock (whole milliseconds under uvloop) may read a little behind."""
        assert not self.expired, "a deadline that expired is not re-armed"
        keeper = self._keeper
        when = keeper.loop.time() + seconds
        if when > self.when:
            self.when = when
        self.done = False
        if not self._queued:  # its entry left the heap while the deadline was ended
            when = self.when
            heappush(keeper.heap, (when, id(self), self))
            self._queued = True
            if when < keeper.armed:
                keeper.arm(when)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def check(self) -> None:
        if self.expired and self._task.uncancel() <= self._cancelling:
            raise TimeoutError

    def cancel(self) -> None:
        self.done = True


class _Keeper:
    """The deadlines of one event loop in a heap by time, under one timer armed for the
    earliest. A deadline that is no longer needed is only marked; marked ones leave the
    heap when they reach its top (usually at the next deadline: waits of one length end
    in the order they began) or when the timer fires.

    ``current`` is the keeper of the loop that made the last deadline: a deadline on
    another loop (a test's, another thread's) makes that loop's keeper current, and the
    keeper it replaced still serves the deadlines it holds with its own armed timer.
    """

    __slots__ = ("armed", "handle", "heap", "limit", "loop")

    current: ClassVar[_Keeper | None] = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, Deadline]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.armed = float("inf")
        self.limit = _COMPACT_AT

    def arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = when
        self.handle = self.loop.call_at(when, self._fire)

    def compact(self) -> None:
        """Drop the ended deadlines from the heap. They wait below a live one that ends
        later (a stalled stream's, say) until it reaches the top, and at a thousand waits
        a second that would keep every wait of the last minute; compacting whenever the
        heap doubles keeps it within twice the live deadlines at a constant cost a wait."""
        heap = self.heap
        for entry in heap:
            if entry[2].done:
                entry[2]._queued = False
        heap[:] = [entry for entry in heap if not entry[2].done]
        heapify(heap)
        self.limit = max(_COMPACT_AT, 2 * len(heap))

    def _fire(self) -> None:
        self.handle = None
        self.armed = float("inf")
        heap = self.heap
        due = self.loop.time() + _RESOLUTION_S
        while heap and (heap[0][2].done or heap[0][0] <= due):
            deadline = heappop(heap)[2]
            if deadline.done:
                deadline._queued = False
            elif deadline.when > due:  # re-armed later since its entry was made
                heappush(heap, (deadline.when, id(deadline), deadline))
            else:
                deadline._queued = False
                deadline._expire()
        if heap:
            self.arm(heap[0][0])
