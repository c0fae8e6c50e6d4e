"""Canonical answers → Anthropic Messages JSON and its SSE event sequence."""

from __future__ import annotations

from typing import Any

import orjson

from tiergate import _core
from tiergate.errors import DispatchError, RequestError
from tiergate.providers.base import (
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)

__all__ = [
    "AnthropicStreamRenderer",
    "anthropic_error_body",
    "anthropic_message_body",
    "render_anthropic_message",
]

STOP_REASON: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

# The stop reasons as JSON, for the stream's message_delta.
_STOP_REASONS = {reason: orjson.dumps(name) for reason, name in STOP_REASON.items()}

# RequestError/DispatchError `type` → Anthropic error type.
_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _usage(u: Usage) -> dict[str, Any]:
    # Anthropic counts cache reads apart from input_tokens.
    return {
        "input_tokens": max(u.input_tokens - u.cached_tokens, 0),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _tool_input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def render_anthropic_message(c: Completion, message_id: str, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    text = c.text if c.text is not None else c.refusal
    if text:
        content.append({"type": "text", "text": text})
    for t in c.tool_calls:
        content.append(
            {"type": "tool_use", "id": t.id, "name": t.name, "input": _tool_input(t.arguments)}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASON[c.finish_reason],
        "stop_sequence": None,
        "usage": _usage(c.usage),
    }


def anthropic_message_body(c: Completion, message_id: str, model: str) -> bytes:
    """``orjson.dumps(render_anthropic_message(...))``, written by the core for an answer
    of text alone (the usual one); an answer with tool calls, or values the core would
    write otherwise or refuse (a count that is no ``int``, past 64 bits; a text that is
    not a string or not UTF-8), go through the dict."""
    if not c.tool_calls:
        u = c.usage
        try:
            return _core.render_anthropic_message(
                message_id,
                model,
                c.text if c.text is not None else c.refusal,
                STOP_REASON[c.finish_reason],
                u.input_tokens,
                u.output_tokens,
                u.cached_tokens,
            )
        except (TypeError, OverflowError, ValueError):
            pass
    return orjson.dumps(render_anthropic_message(c, message_id, model))


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# The frames of a stream as orjson writes their dicts (compact, members in order), cut
# where a value goes: written from these pieces, a text delta costs a fifth of building
# and dumping its dicts (tests/test_anthropic_render.py holds the dict renderer as the
# oracle of the bytes).
_START = b'event: message_start\ndata: {"type":"message_start","message":{"id":'
_START_MODEL = b',"type":"message","role":"assistant","model":'
_START_END = (
    b',"content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
    b'event: ping\ndata: {"type":"ping"}\n\n'
)
_BLOCK_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":'
_TEXT_BLOCK = b',"content_block":{"type":"text","text":""}}\n\n'
_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_DELTA = b',"delta":{"type":"text_delta","text":'
_DELTA_END = b"}}\n\n"
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
_BLOCK_STOP_END = b"}\n\n"
_MESSAGE_DELTA = b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
_MESSAGE_DELTA_USAGE = b',"stop_sequence":null},"usage":'
_MESSAGE_STOP = b'}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'


class AnthropicStreamRenderer:
    """Canonical events → message_start, content blocks, message_delta, message_stop.

    Each text run and each tool call is its own content block, numbered in order."""

    __slots__ = (
        "_message_id",
        "_model",
        "_next",
        "_open",
        "_open_kind",
        "_started",
        "_text_delta",
        "_tools",
    )

    def __init__(self, message_id: str, model: str) -> None:
        self._message_id = message_id
        self._model = model
        self._started = False
        self._next = 0  # index the next content block gets
        self._open = -1  # index of the open block, -1 when none
        self._open_kind = ""
        self._tools: dict[int, int] = {}  # canonical tool-call index → block index
        # A text delta's frame up to its text, for the open text block.
        self._text_delta = b""

    def _start(self) -> bytes:
        self._started = True
        return (
            _START
            + orjson.dumps(self._message_id)
            + _START_MODEL
            + orjson.dumps(self._model)
            + _START_END
        )

    def _close(self) -> bytes:
        if self._open < 0:
            return b""
        index, self._open = self._open, -1
        return _BLOCK_STOP + str(index).encode() + _BLOCK_STOP_END

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open, self._open_kind = self._next, kind
        self._next += 1
        return out + _event(
            "content_block_start",
            {"type": "content_block_start", "index": self._open, "content_block": block},
        )

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def render(self, event: StreamEvent) -> bytes:
        out = b"" if self._started else self._start()
        if isinstance(event, TextDelta):
            if self._open < 0 or self._open_kind != "text":
                out += self._close()
                index = self._open = self._next
                self._open_kind = "text"
                self._next += 1
                at = str(index).encode()
                self._text_delta = _DELTA + at + _TEXT_DELTA
                out += _BLOCK_START + at + _TEXT_BLOCK
            return out + self._text_delta + orjson.dumps(event.text) + _DELTA_END
        if isinstance(event, StreamEnd):
            if event.refusal:
                out += self.render(TextDelta(event.refusal))
            return (
                out
                + self._close()
                + _MESSAGE_DELTA
                + _STOP_REASONS[event.finish_reason]
                + _MESSAGE_DELTA_USAGE
                + orjson.dumps(_usage(event.usage))
                + _MESSAGE_STOP
            )
        if event.index not in self._tools:
            block = {
                "type": "tool_use",
                "id": event.id or "",
                "name": event.name or "",
                "input": {},
            }
            out += self._begin("tool", block)
            self._tools[event.index] = self._open
        if not event.arguments:
            return out
        index = self._tools[event.index]
        return out + self._delta(
            index, {"type": "input_json_delta", "partial_json": event.arguments}
        )

    @staticmethod
    def error(message: str, error_type: str = "api_error") -> bytes:
        """Terminal error event: the anthropic SDK raises on it; no message_stop follows."""
        return _event("error", {"type": "error", "error": {"type": error_type, "message": message}})


def anthropic_error_body(exc: RequestError | DispatchError) -> dict[str, Any]:
    kind = _ERROR_TYPE.get(exc.status, "invalid_request_error" if exc.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}
