"""Idempotency: identical requests share one upstream call; completed ones replay.

Key: the caller's ``Idempotency-Key`` when given, else the core's ``request_key`` over
the canonical body. Both are scoped by tenant, surface and stream mode, so a replay is
byte-for-byte what the original caller received (a streamed answer replays as its
recorded frames). Only successes are stored; a failure is shared with the requests that
were waiting on it, and the next request tries again.

The store is an interface: :class:`MemoryStore` (bounded by bytes, LRU, TTL) is the
default; a Redis store implements the same two methods for a fleet of pods.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from sys import getsizeof
from typing import Protocol

import xxhash

from tiergate import _core

__all__ = ["Flight", "Idempotency", "MemoryStore", "Recorded", "Store"]


@dataclass(slots=True)
class Recorded:
    """A finished response as the caller received it. Nothing changes one after it is
    made; not frozen because a frozen dataclass sets each field through
    ``object.__setattr__`` (one per request: 17.9k instructions against 10.4k)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""  # non-streamed body
    frames: tuple[bytes, ...] = ()  # streamed body, frame by frame
    stream: bool = False

    size: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Bytes this entry holds in memory, Python's object overheads included: the
        # store's bound is meant to be the memory it costs. Computed once, from sizes
        # CPython reports for each kind of object (measured at import, not guessed).
        # The lengths summed in the core: in Python, even by C iterators, the sum cost a
        # third of the record.
        frames, headers = self.frames, self.headers
        self.size = (
            _FIXED
            + len(self.body)
            + len(frames) * _PER_FRAME
            + len(headers) * _PER_HEADER
            + _core.held_len(frames, headers)
        )


# getsizeof of an empty bytes / str / tuple, and of a pointer slot in a tuple.
_BYTES, _STR, _TUPLE, _SLOT = getsizeof(b""), getsizeof(""), getsizeof(()), 8
# The record itself, its body and two tuples, plus the store's own key, tuple and
# ordered-dict entry (256).
_FIXED = 2 * _TUPLE + _BYTES + 256 + 96
_PER_FRAME = _BYTES + _SLOT
_PER_HEADER = _SLOT + _TUPLE + 2 * _SLOT + 2 * _STR


class Store(Protocol):
    async def get(self, key: bytes) -> Recorded | None: ...

    async def put(self, key: bytes, value: Recorded, ttl_s: float) -> None: ...


class MemoryStore:
    """Bounded in-memory store: evicts least recently used entries past ``max_bytes``."""

    __slots__ = ("_bytes", "_entries", "max_bytes")

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[float, Recorded]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    async def get(self, key: bytes) -> Recorded | None:
        return self.get_now(key)

    def get_now(self, key: bytes) -> Recorded | None:
        """:meth:`get` without a coroutine: nothing here waits."""
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: bytes, value: Recorded, ttl_s: float) -> None:
        self.put_now(key, value, ttl_s)

    def put_now(self, key: bytes, value: Recorded, ttl_s: float) -> None:
        """:meth:`put` without a coroutine: nothing here waits."""
        if value.size > self.max_bytes:
            return  # larger than the whole store: not kept
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._bytes += value.size
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: bytes) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= value.size


class Flight:
    """The leader's promise to the followers of an identical in-flight request."""

    __slots__ = ("future", "key")

    def __init__(self, key: bytes) -> None:
        self.key = key
        # Made by the first follower (most requests have none). Its result None: the
        # leader gave up without an answer (its caller left); a follower leads anew.
        self.future: asyncio.Future[Recorded | None] | None = None


class Idempotency:
    """Coalescing and replay in front of the upstream call."""

    __slots__ = ("_get_now", "_inflight", "_put_now", "store", "ttl_s")

    def __init__(self, store: Store | None = None, ttl_s: float = 600.0) -> None:
        self.store: Store = store if store is not None else MemoryStore()
        self.ttl_s = ttl_s
        self._inflight: dict[bytes, Flight] = {}
        # A store that reads and keeps an entry without waiting (the memory store) is
        # used without coroutines: see lookup_now and finish_now.
        self._get_now: Callable[[bytes], Recorded | None] | None = getattr(
            self.store, "get_now", None
        )
        self._put_now: Callable[[bytes, Recorded, float], None] | None = getattr(
            self.store, "put_now", None
        )

    @staticmethod
    def scope(tenant: str, surface: str) -> str:
        """A key's scope without its stream mark (``s`` or ``n``, appended to it), the
        form ``_core.ingest_chat_request`` keys a body under."""
        return f"{tenant}\x00{surface}\x00"

    @staticmethod
    def key(raw: bytes, tenant: str, surface: str, stream: bool, caller_key: str | None) -> bytes:
        scope = Idempotency.scope(tenant, surface) + ("s" if stream else "n")
        if caller_key is not None:
            return xxhash.xxh3_128_digest(f"{scope}\x00key\x00{caller_key}".encode())
        return _core.request_key(raw, scope)

    async def lookup(self, key: bytes) -> tuple[str, Recorded | Flight]:
        """``("replay", recorded)``, ``("coalesced", recorded)`` after waiting on an
        identical in-flight request, or ``("miss", flight)``: the caller leads and must
        call :meth:`finish` exactly once."""
        while True:
            recorded = await self.store.get(key)
            if recorded is not None:
                return "replay", recorded
            flight = self._inflight.get(key)
            if flight is None:
                break
            future = flight.future
            if future is None:
                future = flight.future = asyncio.get_running_loop().create_future()
            shared = await asyncio.shield(future)
            if shared is not None:
                return "coalesced", shared
        flight = Flight(key)
        self._inflight[key] = flight
        return "miss", flight

    def lookup_now(self, key: bytes) -> tuple[str, Recorded | Flight] | None:
        """:meth:`lookup` without awaiting, when the store reads synchronously and no
        identical request is in flight (the usual case: two coroutines fewer a request);
        None, having done nothing, otherwise: then await :meth:`lookup`."""
        get_now = self._get_now
        if get_now is None or key in self._inflight:
            return None
        recorded = get_now(key)
        if recorded is not None:
            return "replay", recorded
        flight = Flight(key)
        self._inflight[key] = flight
        return "miss", flight

    def _hand_over(self, flight: Flight, result: Recorded | None) -> None:
        """The flight ends: its followers get ``result``; a new identical request leads."""
        if self._inflight.get(flight.key) is flight:
            del self._inflight[flight.key]
        future = flight.future
        if future is not None and not future.done():
            future.set_result(result)

    async def finish(self, flight: Flight, result: Recorded) -> None:
        """Hand the result to the followers; keep it only when it succeeded."""
        self._hand_over(flight, result)
        if 200 <= result.status < 300:
            await self.store.put(flight.key, result, self.ttl_s)

    def finish_now(self, flight: Flight, result: Recorded) -> bool:
        """:meth:`finish` without awaiting, when the store keeps an entry synchronously
        (the memory store: a coroutine and an await fewer per answer); False, having done
        nothing, when the store must be awaited: then call :meth:`finish`."""
        put_now = self._put_now
        if put_now is None:
            return False
        self._hand_over(flight, result)
        if 200 <= result.status < 300:
            put_now(flight.key, result, self.ttl_s)
        return True

    def abandon(self, flight: Flight, result: Recorded | None) -> None:
        """The leader could not finish: followers get ``result`` (its error), or, when it is
        None (the leader's caller left), one of them leads a fresh call. Nothing is kept."""
        self._hand_over(flight, result)

    @property
    def inflight(self) -> int:
        return len(self._inflight)
