"""Canonical answers → OpenAI chat-completions JSON and SSE chunks."""

from __future__ import annotations

import time
from typing import Any

import orjson

from tiergate import _core
from tiergate.errors import DispatchError, RequestError
from tiergate.providers.base import Completion, StreamEnd, StreamEvent, TextDelta, Usage

__all__ = [
    "OpenAIStreamRenderer",
    "openai_completion_body",
    "openai_error_body",
    "render_openai_completion",
]

DONE = b"data: [DONE]\n\n"
_TEXT_MID = b',"choices":[{"index":0,"delta":{"content":'
_TEXT_TAIL = b'},"finish_reason":null,"logprobs":null}]}\n\n'


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def render_openai_completion(c: Completion, response_id: str, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": c.refusal}
    if c.tool_calls:
        message["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in c.tool_calls
        ]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": c.finish_reason, "logprobs": None}
        ],
        "usage": _usage(c.usage),
    }


def openai_completion_body(c: Completion, response_id: str, model: str) -> bytes:
    """``orjson.dumps(render_openai_completion(...))``, written by the core; values the
    core would write otherwise or refuse (a non-string text from an odd provider
    answer, a boolean count, a total past 64 bits) go through the dict. An answer the
    core read (``openai_tail``) needs only the head put in front."""
    tail = c.openai_tail
    if tail is not None and model == c.model:
        return _core.openai_completion_with_head(response_id, None, tail)
    u = c.usage
    try:
        return _core.render_openai_completion(
            response_id,
            model,
            int(time.time()),
            c.text,
            c.refusal,
            [(t.id, t.name, t.arguments) for t in c.tool_calls] if c.tool_calls else [],
            c.finish_reason,
            u.input_tokens,
            u.output_tokens,
            u.cached_tokens,
            u.reasoning_tokens,
        )
    except (TypeError, OverflowError, ValueError):
        return orjson.dumps(render_openai_completion(c, response_id, model))


class OpenAIStreamRenderer:
    """Turns canonical stream events into ``data: {chunk}`` frames, in order."""

    __slots__ = ("_base", "_include_usage", "_started", "_text_head")

    def __init__(self, response_id: str, model: str, include_usage: bool) -> None:
        self._base = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._include_usage = include_usage
        self._started = False
        # A text delta's frame is this head, the JSON string, then _TEXT_TAIL: the same
        # bytes _chunk writes, without building and serialising the dict per token.
        self._text_head = b"data: " + orjson.dumps(self._base)[:-1] + _TEXT_MID

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            **self._base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def render(self, event: StreamEvent) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            out = self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, TextDelta):
            return out + self._text_head + orjson.dumps(event.text) + _TEXT_TAIL
        if isinstance(event, StreamEnd):
            if event.refusal:
                out += self._chunk({"refusal": event.refusal})
            out += self._chunk({}, event.finish_reason)
            if self._include_usage:
                body = {**self._base, "choices": [], "usage": _usage(event.usage)}
                out += b"data: " + orjson.dumps(body) + b"\n\n"
            return out + DONE
        call: dict[str, Any] = {"index": event.index}
        if event.id is not None:
            call["id"] = event.id
            call["type"] = "function"
        fn: dict[str, Any] = {"arguments": event.arguments}
        if event.name is not None:
            fn["name"] = event.name
        call["function"] = fn
        return out + self._chunk({"tool_calls": [call]})

    @staticmethod
    def error(message: str, code: str) -> bytes:
        """Terminal error frame: the openai SDK raises on it; no [DONE] follows."""
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
        return b"data: " + orjson.dumps(body) + b"\n\n"


def openai_error_body(exc: RequestError | DispatchError) -> dict[str, Any]:
    param = exc.param if isinstance(exc, RequestError) else None
    return {"error": {"message": exc.message, "type": exc.type, "param": param, "code": exc.code}}
