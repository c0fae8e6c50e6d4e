"""server/stepping.py: items already there come back at once; the rest is awaited
properly, with cancellation and errors forwarded into the iterator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tiergate.server.stepping import Pending, start, step


async def source(log: list[str]) -> AsyncIterator[int]:
    try:
        yield 1
        yield 2  # no suspension between 1 and 2: "same network chunk"
        await asyncio.sleep(0.01)
        yield 3
        await asyncio.sleep(10)
        yield 4
    finally:
        log.append("closed")


async def test_ready_items_come_back_synchronously_and_pending_ones_are_awaited() -> None:
    log: list[str] = []
    it = source(log)
    assert step(it) == (True, 1)
    assert step(it) == (True, 2)
    ready, pending = step(it)
    assert not ready and isinstance(pending, Pending)
    assert await pending == 3
    ready, pending = step(it)
    assert not ready and isinstance(pending, Pending)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await pending
    assert log == ["closed"]  # the cancellation reached the generator and closed it
    with pytest.raises(StopAsyncIteration):
        step(it)


async def test_errors_propagate() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0)
        raise ValueError("cut")

    it = failing()
    assert step(it) == (True, 1)
    ready, pending = step(it)
    assert not ready
    with pytest.raises(ValueError, match="cut"):
        await pending  # type: ignore[misc]


async def test_a_step_left_unawaited_closes_with_every_generator_it_runs_through() -> None:
    # A stream's generators wrap one another (the adapter's over the SSE translation
    # over the body); the caller hangs up while a step waits in the innermost. Ending
    # the step must end them all, their async cleanups run, none left marked running
    # (the event loop's finalizer would log "already running" failures).
    log: list[str] = []

    async def inner() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(10)
            yield 2
        finally:
            await asyncio.sleep(0)  # a cleanup that awaits, as releasing a response does
            log.append("inner closed")

    async def outer() -> AsyncIterator[int]:
        events = inner()
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # fails if inner is still marked running
            log.append("outer closed")

    it = outer()
    assert step(it) == (True, 1)
    ready, pending = step(it)
    assert not ready and isinstance(pending, Pending)
    await pending.aclose()
    assert log == ["inner closed", "outer closed"]
    await it.aclose()  # already ended: no "asynchronous generator is already running"
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()


async def test_start_runs_a_send_until_it_must_wait() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("quick")

    async def slow(gate: asyncio.Future[None]) -> None:
        done.append("slow began")
        await gate
        done.append("slow ended")

    assert start(quick()) is None and done == ["quick"]  # finished, nothing to await
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rest = start(slow(gate))
    assert rest is not None and done[-1] == "slow began"
    asyncio.get_running_loop().call_later(0.01, gate.set_result, None)
    await rest
    assert done[-1] == "slow ended"
    # A cancellation while the rest waits reaches the send (as a timeout's does).
    gate2: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rest2 = start(slow(gate2))
    assert rest2 is not None

    async def wait_rest() -> None:
        await rest2

    task = asyncio.create_task(wait_rest())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate2.cancelled()
