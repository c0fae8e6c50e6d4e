"""What the stream loop of the server renders with: a stream's items → the caller's
frames, plus what accounting reads afterwards (the text delivered, the end).

Two kinds, one interface: :class:`EventFrames` renders canonical events with a
surface's renderer; :class:`RelayFrames` renders what a core relay parsed (an OpenAI
provider relayed to the OpenAI surface, ``providers/relay.py``).
"""

from __future__ import annotations

import time
from typing import Protocol, cast

from tiergate import _core
from tiergate.providers.base import StreamEnd, StreamEvent, TextDelta, Usage
from tiergate.routing.dispatch import StreamItem

__all__ = ["EventFrames", "Frames", "RelayFrames"]


class Renderer(Protocol):
    def render(self, event: StreamEvent) -> bytes: ...


class Frames(Protocol):
    end: StreamEnd | None  # set once the end was rendered

    def render(self, item: StreamItem) -> bytes: ...

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

    __slots__ = ("_pieces", "_renderer", "end")

    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer
        self._pieces: list[str] = []
        self.end: StreamEnd | None = None

    def render(self, item: StreamItem) -> bytes:
        event = cast(StreamEvent, item)
        if isinstance(event, TextDelta):
            self._pieces.append(event.text)
        elif isinstance(event, StreamEnd):
            self.end = event
        return self._renderer.render(event)

    @property
    def delivered(self) -> int:
        return len(self._pieces)

    @property
    def text(self) -> str:
        return "".join(self._pieces)


class RelayFrames:
    """The frames a core relay renders from what it parsed since the last call."""

    __slots__ = ("_relay", "end")

    def __init__(
        self, relay: _core.OpenAIRelay, response_id: str, model: str, include_usage: bool
    ) -> None:
        relay.begin(response_id, model, int(time.time()), include_usage)
        self._relay = relay
        self.end: StreamEnd | None = None

    def render(self, item: StreamItem) -> bytes:
        relay = self._relay
        frames = relay.render()
        end = relay.end
        if end is not None:
            finish, input_tokens, output_tokens, cached, reasoning, model = end
            usage = Usage(input_tokens, output_tokens, cached, reasoning)
            self.end = StreamEnd(finish, usage, model)
        return frames

    @property
    def delivered(self) -> int:
        return self._relay.delivered

    @property
    def text(self) -> str:
        return self._relay.text
