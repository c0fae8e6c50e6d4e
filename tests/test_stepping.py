"""server/stepping.py: items already there come back at once; the rest is awaited
properly, with cancellation and errors forwarded into the iterator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tiergate.server.stepping import Pending, step


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
