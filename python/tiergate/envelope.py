"""The canonical request: what every surface parses into and every adapter translates from.

The shape follows OpenAI chat completions (the most general of the wire formats) but
typed and normalised, so adapters never re-check what the server already validated:
system text is one string per message, user content is a list of parts, tool-call
arguments are JSON text, tool results are their own messages.

:class:`Envelope` adds what the request must satisfy (latency budget, cost ceiling,
quality floor, tenant, route, idempotency key, deadline) from headers and defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "MADE_LATER",
    "TEXT_FORMAT",
    "ChatRequest",
    "Envelope",
    "ImagePart",
    "Message",
    "Part",
    "PlainChatRequest",
    "ResponseFormat",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolSet",
]

Role = Literal["system", "user", "assistant", "tool"]
# A message as the core read it: (role, text, [(id, name, arguments)] or None,
# tool_call_id); see ``ChatRequest.turn``.
TurnMessage = tuple[str, str | None, Sequence[tuple[str, str, str]] | None, str | None]


# Not frozen, unlike the other parts: one is made per message of every request, and a
# frozen dataclass's __init__ costs half as much again. Nothing changes a part in place.
@dataclass(slots=True)
class TextPart:
    text: str


@dataclass(slots=True, frozen=True)
class ImagePart:
    """An image by URL; for ``data:`` URLs the media type and base64 payload are split out."""

    url: str
    media_type: str | None = None
    data_b64: str | None = None


Part = TextPart | ImagePart


@dataclass(slots=True, frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # role == "tool"
    name: str | None = None

    @property
    def text(self) -> str:
        """All text parts joined (images dropped)."""
        parts = self.parts
        if len(parts) == 1:  # the usual message: one part, no join
            p = parts[0]
            return p.text if isinstance(p, TextPart) else ""
        return "".join(p.text for p in parts if isinstance(p, TextPart))


@dataclass(slots=True, frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments
    strict: bool = False


@dataclass(slots=True, eq=False)
class ToolSet:
    """The tools of one ``tools`` array, read once from its exact bytes and shared by
    every request that sends those bytes again (an agent sends the same tools with every
    turn; ``server/parse_openai.py`` keeps them). Shared, so never changed: not the list,
    not a :class:`Tool` (frozen), not a tool's ``parameters`` (read and embedded, never
    written). ``forms``: what an adapter derived of them, by the adapter's name (its
    written tools), made on first use."""

    tools: list[Tool]
    forms: dict[str, Any]


@dataclass(slots=True, frozen=True)
class ResponseFormat:
    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False


# Plain text answers, the usual case: frozen, so every request may share this one.
TEXT_FORMAT = ResponseFormat()


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request, independent of the surface it arrived on."""

    model: str  # the route name the caller asked for
    messages: list[Message]
    tools: list[Tool] = field(default_factory=list)
    # "auto" | "none" | "required" | "function" (then tool_choice_name names it)
    tool_choice: Literal["auto", "none", "required", "function"] = "auto"
    tool_choice_name: str | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = TEXT_FORMAT
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    # The body as received (for request_key / estimate_tokens in the core).
    raw: bytes = b""
    # ``(messages, [(role, text), ...])`` when the core read every message as plain text
    # (server/parse_openai.py): valid only while ``self.messages is`` that same list, so a
    # request made with other messages (a redaction's ``replace``) never uses it.
    plain: tuple[list[Message], Sequence[tuple[str, str]]] | None = field(
        default=None, compare=False, repr=False
    )
    # The shared tools ``tools`` was read from: valid only while ``self.tools is
    # toolset.tools`` (see ``tool_forms``).
    toolset: ToolSet | None = field(default=None, compare=False, repr=False)
    # ``(messages, [(role, text, calls, tool_call_id), ...], [(role, text), ...])``: the
    # core's reading of an agent's turn (``_core.ingest_chat_request``) and every text
    # the safety scan reads of it (text parts and tool-call arguments), when the core
    # read the messages but not all as plain text; valid, like ``plain``, only while
    # ``self.messages is`` that same list.
    turn: tuple[list[Message], Sequence[TurnMessage], Sequence[tuple[str, str]]] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def plain_texts(self) -> Sequence[tuple[str, str]] | None:
        """The core's ``(role, text)`` reading of the messages, while it is still theirs
        (see ``plain``); None otherwise."""
        plain = self.plain
        return plain[1] if plain is not None and plain[0] is self.messages else None

    @property
    def scan_texts(self) -> Sequence[tuple[str, str]] | None:
        """Every text of the messages the safety scan reads, as ``(role, text)``, when
        the core read the messages (see ``plain`` and ``turn``); None otherwise."""
        plain = self.plain
        if plain is not None:
            return plain[1] if plain[0] is self.messages else None
        turn = self.turn
        return turn[2] if turn is not None and turn[0] is self.messages else None

    @property
    def turn_messages(self) -> Sequence[TurnMessage] | None:
        """The core's reading of an agent's turn (see ``turn``), while it is still the
        messages'; None otherwise."""
        turn = self.turn
        return turn[1] if turn is not None and turn[0] is self.messages else None

    @property
    def tool_forms(self) -> dict[str, Any] | None:
        """The adapters' forms of the tools, shared by the requests that sent the same
        tools (see :class:`ToolSet`), while ``tools`` is still the toolset's; None
        otherwise (tools made another way)."""
        toolset = self.toolset
        return toolset.forms if toolset is not None and toolset.tools is self.tools else None

    @property
    def last_text(self) -> str | None:
        """The last message's text (None without messages)."""
        messages = self.messages
        return messages[-1].text if messages else None

    @property
    def system_text(self) -> str:
        """System messages joined with blank lines (for providers with one system slot)."""
        return "\n\n".join(m.text for m in self.messages if m.role == "system")

    @property
    def has_images(self) -> bool:
        for m in self.messages:
            for p in m.parts:
                if isinstance(p, ImagePart):
                    return True
        return False


# What a PlainChatRequest is made with for its messages, and in ``plain``, until they are
# made (typed Any: the constructor's signature is ChatRequest's).
MADE_LATER: Any = None
# The slot ChatRequest keeps its messages in (PlainChatRequest reads and writes it past
# its own ``messages`` property).
_MESSAGES: Any = ChatRequest.__dict__["messages"]
_FIELDS = tuple(f.name for f in fields(ChatRequest) if f.compare)


class PlainChatRequest(ChatRequest):
    """A :class:`ChatRequest` the core read whole (``server/parse_openai.py``), every
    message plain text: its :class:`Message` objects are made on first use, from
    ``plain``'s ``(role, text)`` pairs, as ``parse_openai_request`` would have made them.

    The usual request never needs them (the provider's body, the safety scan and the
    planner read the pairs), and making two objects a message costs more than the core's
    whole reading of it. Made with ``messages=MADE_LATER`` and ``plain=(MADE_LATER,
    pairs)``; once
    made, ``plain`` holds them as ChatRequest's does (``(messages, pairs)``), and
    messages set otherwise (``dataclasses.replace``) are not the pairs' any more. Equal
    to a ChatRequest with equal fields.
    """

    __slots__ = ()

    # ChatRequest's slot holds the messages, or None until they are made (never unset:
    # a read that raised would cost more than the objects).
    @property
    def messages(self) -> list[Message]:
        made: list[Message] | None = _MESSAGES.__get__(self)
        if made is None:
            pairs = self.plain[1]  # type: ignore[index]
            made = [Message(role, [TextPart(text)], []) for role, text in pairs]  # type: ignore[arg-type]
            _MESSAGES.__set__(self, made)
            self.plain = (made, pairs)
        return made

    @messages.setter
    def messages(self, value: list[Message] | None) -> None:
        _MESSAGES.__set__(self, value)

    @property
    def plain_texts(self) -> Sequence[tuple[str, str]] | None:
        plain = self.plain
        assert plain is not None
        messages = _MESSAGES.__get__(self)
        # Not made yet (the pairs are the messages), or made from the pairs.
        return plain[1] if messages is None or messages is plain[0] else None

    @property
    def scan_texts(self) -> Sequence[tuple[str, str]] | None:
        return self.plain_texts

    @property
    def last_text(self) -> str | None:
        pairs = self.plain_texts
        if pairs is None:
            return ChatRequest.last_text.fget(self)  # type: ignore[attr-defined,no-any-return]
        return pairs[-1][1]  # the core reads no body without messages

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatRequest):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _FIELDS)

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class Envelope:
    """What the request must satisfy, after headers, tenant and route defaults."""

    surface: Literal["openai", "anthropic"]
    route: str
    tenant: str = ""
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    min_quality: float | None = None
    timeout_ms: float | None = None
    idempotency_key: str | None = None
    request_id: str = ""
