"""Tools read lately, by the exact bytes of their ``tools`` array: an agent sends the
same tools with every turn, and each surface's parser reads and checks them once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tiergate.envelope import Tool, ToolSet
from tiergate.errors import RequestError

__all__ = ["ToolSets"]


class ToolSets:
    """The tools read lately, by the exact bytes of their ``tools`` array (never by a
    hash or a name: a caller's tools are served only to a body holding the same bytes).
    Bounded in entries and in the bytes kept; the oldest entry goes first. A hit gives
    what a miss reads: the same tools, checked the same way (property tests).

    ``read``: the surface parser's reader of a ``tools`` value (raising its
    ``RequestError`` for what it refuses)."""

    __slots__ = ("_kept", "_max_bytes", "_max_entries", "_read", "_sets")

    def __init__(
        self,
        read: Callable[[Any], list[Tool]],
        max_entries: int = 256,
        max_bytes: int = 1 << 20,
    ) -> None:
        self._read = read
        self._sets: dict[bytes, ToolSet] = {}
        self._kept = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def get(self, src: bytes) -> ToolSet | None:
        """The tools of the ``tools`` value ``src`` (JSON); None when the surface's
        parser would refuse them (or ``src`` is not JSON)."""
        toolset = self._sets.get(src)
        if toolset is not None:
            return toolset
        try:
            tools = self._read(orjson.loads(src))
        except (RequestError, orjson.JSONDecodeError):
            return None
        toolset = ToolSet(tools, {})
        size = len(src)
        if size * 4 <= self._max_bytes:  # a larger array is read afresh each time
            sets = self._sets
            while sets and (len(sets) >= self._max_entries or self._kept + size > self._max_bytes):
                oldest = next(iter(sets))
                self._kept -= len(oldest)
                del sets[oldest]
            sets[src] = toolset
            self._kept += size
        return toolset

    def __len__(self) -> int:
        return len(self._sets)
