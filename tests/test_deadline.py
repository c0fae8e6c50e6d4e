"""deadline.Deadline: asyncio.timeout's behaviour for the stream's first wait,
with one timer handle."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate import deadline
from tiergate.deadline import Deadline


async def guarded(guard: Deadline, work: float) -> None:
    """``work`` seconds of waiting under an armed (or re-armed) ``guard``, as the
    documented use has it."""
    try:
        await asyncio.sleep(work)
    except asyncio.CancelledError:
        guard.check()
        raise
    finally:
        guard.cancel()


async def bounded(seconds: float, work: float, cancelled_first: bool = False) -> str:
    """Deadline's documented use around one wait; ``cancelled_first``: the task is also
    cancelled from elsewhere before the wait."""
    guard = Deadline(seconds)
    if cancelled_first:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
    await guarded(guard, work)
    return "done"


async def test_work_within_the_deadline_finishes_and_leaves_no_timer() -> None:
    assert await bounded(5.0, 0.0) == "done"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # a timer left armed would cancel this


async def test_a_passed_deadline_is_a_timeout_and_the_task_is_not_left_cancelling() -> None:
    with pytest.raises(TimeoutError):
        await bounded(0.01, 5.0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # still usable: no pending cancellation


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    task = asyncio.ensure_future(bounded(5.0, 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_callers_cancellation_wins_over_an_expiry_at_the_same_time() -> None:
    # As asyncio.Timeout: when the task was also cancelled by someone else, the
    # cancellation is not turned into a TimeoutError.
    task = asyncio.ensure_future(bounded(0.0, 1.0, cancelled_first=True))
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadlines_of_any_lengths_expire_in_time_order() -> None:
    # One shared timer: a shorter deadline begun after a longer one must re-arm it, and
    # each expiry must arm it for the next.
    loop = asyncio.get_running_loop()
    start = loop.time()
    timed_out: dict[float, float] = {}

    async def one(wait: float) -> None:
        with pytest.raises(TimeoutError):
            await bounded(wait, 10.0)
        timed_out[wait] = loop.time() - start

    waits = [0.2, 0.05, 30.0, 0.1, 0.02]
    tasks = [asyncio.ensure_future(one(w)) for w in waits]
    await asyncio.sleep(0)  # each task began its wait
    keeper = deadline._Keeper.current
    assert keeper is not None
    assert keeper.armed == min(when for when, _, _ in keeper.heap)
    await asyncio.gather(*(t for w, t in zip(waits, tasks, strict=True) if w < 1))
    assert sorted(timed_out, key=timed_out.__getitem__) == [0.02, 0.05, 0.1, 0.2]
    assert all(at >= wait - 0.002 for wait, at in timed_out.items())  # none early
    assert not tasks[2].done()  # the long one still waits
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_ended_waits_do_not_pile_up_and_do_not_fire() -> None:
    for _ in range(1000):
        assert await bounded(0.05, 0.0) == "done"
    keeper = deadline._Keeper.current
    assert keeper is not None
    assert len(keeper.heap) <= 1  # each ended wait left when the next began
    await asyncio.sleep(0.1)  # past every deadline: none of them cancels this task
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_waits_that_end_behind_a_long_one_are_dropped_as_the_heap_grows() -> None:
    """A live deadline far off (a stalled stream's) keeps ended ones that end later below
    it; the keeper compacts, so the heap stays near the live count, not the waits seen."""
    held = Deadline(60.0)
    try:
        for _ in range(5 * deadline._COMPACT_AT):
            assert await bounded(120.0, 0.0) == "done"
        keeper = deadline._Keeper.current
        assert keeper is not None
        assert len(keeper.heap) <= deadline._COMPACT_AT + 1
        assert keeper.heap[0][2] is held
    finally:
        held.cancel()


async def test_a_rearmed_deadline_bounds_each_wait_not_their_sum() -> None:
    # A stream's waits: each ends within the gap, all of them together take several gaps.
    loop = asyncio.get_running_loop()
    guard: Deadline | None = None
    start = loop.time()
    for _ in range(8):
        if guard is None:
            guard = Deadline(0.05)
        else:
            guard.rearm(0.05)
        await guarded(guard, 0.02)
    assert loop.time() - start > 0.1  # past the first arming's time: re-arming moved it
    await asyncio.sleep(0.08)  # an ended deadline left behind would cancel this
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_stall_after_rearming_times_out_one_gap_after_the_last_rearm() -> None:
    loop = asyncio.get_running_loop()
    guard = Deadline(0.05)
    guard.cancel()
    await asyncio.sleep(0.04)
    rearmed = loop.time()
    guard.rearm(0.05)
    with pytest.raises(TimeoutError):
        await guarded(guard, 5.0)
    assert loop.time() - rearmed >= 0.05 - 0.002  # not at the first arming's time
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_rearming_after_the_entry_left_the_heap_puts_it_back() -> None:
    # Ended, its entry is dropped when the keeper fires for others; re-armed, it must
    # still fire.
    guard = Deadline(0.01)
    guard.cancel()
    await asyncio.sleep(0.03)  # the keeper fired and dropped the ended entry
    assert not guard._queued
    guard.rearm(0.02)
    assert guard._queued
    with pytest.raises(TimeoutError):
        await guarded(guard, 5.0)


async def test_rearming_never_moves_a_deadline_earlier() -> None:
    guard = Deadline(10.0)
    later = guard.when
    guard.cancel()
    guard.rearm(0.001)
    assert guard.when == later
    guard.cancel()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from("nrcx"), st.floats(0, 5)), max_size=60)
)
def test_the_keepers_heap_holds_one_entry_per_queued_deadline(
    steps: list[tuple[int, str, float]],
) -> None:
    """Any mix of new deadlines, re-arms, ends and compactions: a deadline marked queued
    has exactly one heap entry (never two: entries would compare deadlines), one not
    marked has none, every live one is queued, and the timer is armed no later than the
    earliest live time."""

    async def run() -> None:
        made: list[Deadline] = []
        for slot, op, seconds in steps:
            if op == "n" or not made:
                made.append(Deadline(seconds + 1.0))
                continue
            d = made[slot % len(made)]
            if op == "r" and d.done:
                d.rearm(seconds + 1.0)
            elif op == "c":
                d.cancel()
            elif op == "x":
                keeper = deadline._Keeper.current
                assert keeper is not None
                keeper.compact()
        keeper = deadline._Keeper.current
        assert keeper is not None
        ids = [id(entry[2]) for entry in keeper.heap]
        for d in made:
            assert ids.count(id(d)) == (1 if d._queued else 0)
            if not d.done:
                assert d._queued
                assert keeper.armed <= d.when
        for d in made:
            d.cancel()

    asyncio.run(run())
