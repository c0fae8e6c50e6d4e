"""An agent's turn as the core read it, made the canonical request: one builder for both
surfaces (``parse_openai.py`` and ``parse_anthropic.py``), whose core readers hand back
the same reading of the messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tiergate import _core
from tiergate.envelope import (
    ChatRequest,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolSet,
)

if TYPE_CHECKING:
    from tiergate.routing.planner import Known

__all__ = ["turn_request"]


def turn_request(
    model: str,
    # (the role typed Any: the core gives the canonical roles, Message's Literal)
    messages: Sequence[tuple[Any, str | None, Sequence[tuple[str, str, str]] | None, str | None]],
    tools: list[Tool],
    tool_choice: Any,
    tool_choice_name: str | None,
    parallel_tool_calls: bool,
    response_format: ResponseFormat,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: list[str],
    seed: int | None,
    stream: bool,
    include_usage: bool,
    raw: bytes,
    toolset: ToolSet | None,
    key: bytes | None,
    prompt_tokens: int,
    caps: int,
) -> tuple[ChatRequest, bytes | None, Known]:
    """The request of the core's reading ``messages`` (``(role, text, calls,
    tool_call_id)`` each) and of the other fields, as the surface's parser reads them,
    with its key and what the planner would compute of it (``caps``: the core's bits,
    ``CAP_TOOLS`` added here as the planner adds it). Its ``plain`` or ``turn`` keeps the
    reading (and every text the safety scan reads of it) for the provider's body."""
    parsed: list[Message] = []
    texts: list[tuple[str, str]] = []
    every_plain = True
    for role, text, calls, call_id in messages:
        if text is None:
            parsed.append(
                Message(role, [], [ToolCall(*c) for c in calls] if calls else [], call_id)
            )
            every_plain = False
        else:
            texts.append((role, text))
            if calls is None and call_id is None:
                parsed.append(Message(role, [TextPart(text)], []))
                continue
            parsed.append(
                Message(
                    role,
                    [TextPart(text)],
                    [ToolCall(*c) for c in calls] if calls else [],
                    call_id,
                )
            )
            every_plain = False
        if calls:
            texts.extend([(role, c[2]) for c in calls])
    if tools and tool_choice != "none":
        caps |= _core.CAP_TOOLS
    chat = ChatRequest(
        model,
        parsed,
        tools,
        tool_choice,
        tool_choice_name,
        parallel_tool_calls,
        response_format,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
        stream,
        include_usage,
        raw,
        (parsed, texts) if every_plain else None,
        toolset,
        None if every_plain else (parsed, messages, texts),
    )
    return chat, key, (caps, prompt_tokens)
