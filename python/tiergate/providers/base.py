"""What every provider adapter takes and gives back.

An adapter translates a :class:`~tiergate.envelope.ChatRequest` into one provider's wire
protocol and the answer back into a :class:`Completion` (or a stream of
:data:`StreamEvent`). Failures are raised as :class:`~tiergate.errors.ProviderError`
with one :class:`~tiergate.errors.ErrorClass`; the dispatcher decides what to do next.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tiergate.config import DeploymentConfig, ProviderConfig
from tiergate.envelope import ChatRequest, ToolCall

__all__ = [
    "Adapter",
    "Completion",
    "FinishReason",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # all completion tokens, reasoning ones included
    cached_tokens: int = 0  # prompt tokens served from the provider's cache
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Completion:
    text: str | None
    finish_reason: FinishReason
    usage: Usage
    model: str  # the model id the provider says answered
    tool_calls: list[ToolCall] = field(default_factory=list)
    refusal: str | None = None
    provider_response_id: str = ""
    # The OpenAI surface's body for this answer from `,"model":` on (model: the field
    # above), written by the core as it read an OpenAI answer; the caller's id and time
    # go in front. None for any other answer. Whoever changes a field above clears it.
    openai_tail: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True, frozen=True)
class TextDelta:
    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A piece of one tool call. ``id``/``name`` arrive with the first piece of an index."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


# Not frozen: one ends every stream, and a frozen __init__ sets each field through
# object.__setattr__. Nothing changes one after it is made.
@dataclass(slots=True)
class StreamEnd:
    """Always the last event of a stream that completed; a cut stream raises instead."""

    finish_reason: FinishReason
    usage: Usage
    model: str
    refusal: str | None = None


StreamEvent = TextDelta | ToolCallDelta | StreamEnd


class Adapter(Protocol):
    """One provider wire protocol. One instance per configured provider."""

    name: str
    config: ProviderConfig

    async def open(self) -> None:
        """Create the pooled keep-alive session/client; read credentials."""

    async def close(self) -> None: ...

    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        """Non-streaming call. Raises ProviderError."""
        ...

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        """Streaming call: yields deltas then exactly one StreamEnd; raises ProviderError.

        ``timeout_s`` bounds the time to the first event; the caller enforces the
        inter-chunk timeout and the overall deadline."""
        ...


class AdapterBase(ABC):
    """The base of the transport bases (HTTP, AWS): the two calls every wire protocol's
    adapter implements (the :class:`Adapter` contract's ``complete`` and ``stream``)."""

    __slots__ = ()

    @abstractmethod
    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        """Implemented by each provider's adapter."""

    @abstractmethod
    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        """Implemented by each provider's adapter."""
