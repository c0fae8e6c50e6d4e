"""What the stream loop of the server renders with: a stream's items → the caller's
frames, plus what accounting reads afterwards (the text delivered, the end).

Two kinds, one interface: :class:`EventFrames` renders canonical events with a
surface's renderer; a core relay (:class:`tiergate._core.OpenAIRelay`, an OpenAI
provider relayed to either surface, ``providers/relay.py``) renders what it parsed
itself, and the loop uses it as it is: a wrapper would add a Python call to every item
and an object to every stream.
"""

from __future__ import annotations

from typing import Protocol, cast

from tiergate.providers.base import FinishReason, StreamEnd, StreamEvent, TextDelta
from tiergate.routing.dispatch import StreamItem

__all__ = ["End", "EventFrames", "Frames"]

# The end as accounting reads it: (canonical finish reason, input, output, cached,
# reasoning tokens, model), the shape the core relay reports it in.
End = tuple[FinishReason, int, int, int, int, str]


class Renderer(Protocol):
    def render(self, event: StreamEvent) -> bytes: ...


class Frames(Protocol):
    def render(self, item: StreamItem, /) -> bytes: ...

    @property
    def ended(self) -> bool:
        """The end was rendered."""
        ...

    @property
    def end(self) -> End | None:
        """The end's fields once it was rendered."""
        ...

    @property
    def delivered(self) -> int:
        """Text deltas rendered so far."""
        ...

    @property
    def text(self) -> str:
        """The text rendered so far."""
        ...


class EventFrames:
    """Canonical events through a surface's renderer."""

    __slots__ = ("_end", "_pieces", "_renderer", "ended")

    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer
        self._pieces: list[str] = []
        self._end: StreamEnd | None = None
        self.ended = False

    def render(self, item: StreamItem, /) -> bytes:
        event = cast(StreamEvent, item)
        if isinstance(event, TextDelta):
            self._pieces.append(event.text)
        elif isinstance(event, StreamEnd):
            self._end = event
            self.ended = True
        return self._renderer.render(event)

    @property
    def end(self) -> End | None:
        e = self._end
        if e is None:
            return None
        u = e.usage
        return (
            e.finish_reason,
            u.input_tokens,
            u.output_tokens,
            u.cached_tokens,
            u.reasoning_tokens,
            e.model,
        )

    @property
    def delivered(self) -> int:
        return len(self._pieces)

    @property
    def text(self) -> str:
        return "".join(self._pieces)
