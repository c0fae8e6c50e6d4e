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


class AnthropicStreamRenderer:
    """Canonical events → message_start, content blocks, message_delta, message_stop.

    Each text run and each tool call is its own content block, numbered in order."""

    __slots__ = ("_message_id", "_model", "_next", "_open", "_open_kind", "_started", "_tools")

    def __init__(self, message_id: str, model: str) -> None:
        self._message_id = message_id
        self._model = model
        self._started = False
        self._next = 0  # index the next content block gets
        self._open = -1  # index of the open block, -1 when none
        self._open_kind = ""
        self._tools: dict[int, int] = {}  # canonical tool-call index → block index

    def _start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message}) + _event(
            "ping", {"type": "ping"}
        )

    def _close(self) -> bytes:
        if self._open < 0:
            return b""
        index, self._open = self._open, -1
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

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
                out += self._begin("text", {"type": "text", "text": ""})
            return out + self._delta(self._open, {"type": "text_delta", "text": event.text})
        if isinstance(event, StreamEnd):
            if event.refusal:
                out += self.render(TextDelta(event.refusal))
            out += self._close()
            delta = {"stop_reason": STOP_REASON[event.finish_reason], "stop_sequence": None}
            out += _event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": _usage(event.usage)},
            )
            return out + _event("message_stop", {"type": "message_stop"})
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
