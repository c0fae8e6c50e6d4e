"""Anthropic Messages: ``POST /v1/messages`` (``x-api-key``, ``anthropic-version``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tiergate.envelope import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from tiergate.sim.cache import CacheHint, prefix_hint
from tiergate.sim.flow import Call, Frame, Wire, serve
from tiergate.sim.http import BadRequest, arr, json_response, obj, read_json, seconds
from tiergate.sim.state import SimState

__all__ = ["AnthropicWire", "parse_messages", "routes"]

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "blocked": "refusal",
}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    out = []
    for i, b in enumerate(arr(content or [], where)):
        b = obj(b, f"{where}.{i}")
        if b.get("type") == "text":
            out.append(str(b.get("text", "")))
    return "".join(out)


def _blocks(content: Any, where: str) -> tuple[list[Part], list[ToolCall], list[Message]]:
    """(parts, tool_use calls, tool_result messages) of one message's content."""
    if isinstance(content, str):
        return [TextPart(content)], [], []
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, b in enumerate(arr(content, where)):
        b = obj(b, f"{where}.{i}")
        kind = b.get("type")
        if kind == "text":
            parts.append(TextPart(str(b.get("text", ""))))
        elif kind in ("image", "document"):
            src = obj(b.get("source", {}), f"{where}.{i}.source")
            parts.append(
                ImagePart(
                    url=str(src.get("url", "")),
                    media_type=src.get("media_type"),
                    data_b64=src.get("data"),
                )
            )
        elif kind == "tool_use":
            calls.append(
                ToolCall(
                    str(b.get("id", "")),
                    str(b.get("name", "")),
                    orjson.dumps(b.get("input", {})).decode(),
                )
            )
        elif kind == "tool_result":
            text = _text_of(b.get("content", ""), f"{where}.{i}.content")
            results.append(
                Message("tool", [TextPart(text)], tool_call_id=str(b.get("tool_use_id", "")))
            )
        elif kind in ("thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result"):
            continue
        else:
            raise BadRequest(f"{where}.{i}.type: unsupported content block {kind!r}")
    return parts, calls, results


def parse_messages(body: Any) -> ChatRequest:
    body = obj(body, "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: Field required (a positive integer)")
    messages: list[Message] = []
    system = body.get("system")
    if system:
        messages.append(Message("system", [TextPart(_text_of(system, "system"))]))
    for i, m in enumerate(arr(body.get("messages"), "messages")):
        m = obj(m, f"messages.{i}")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        parts, calls, results = _blocks(m.get("content", ""), f"messages.{i}.content")
        messages.extend(results)
        if parts or calls or not results:
            messages.append(Message(role, parts, tool_calls=calls))
    if not any(m.role != "system" for m in messages):
        raise BadRequest("messages: at least one message is required")
    tools = []
    for i, t in enumerate(body.get("tools") or []):
        t = obj(t, f"tools.{i}")
        if not isinstance(t.get("name"), str):
            raise BadRequest(f"tools.{i}.name: Field required")
        tools.append(
            Tool(
                t["name"],
                str(t.get("description") or ""),
                t.get("input_schema") or {"type": "object"},
            )
        )
    tc = obj(body.get("tool_choice") or {"type": "auto"}, "tool_choice")
    kind = tc.get("type")
    choice: Any = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}.get(
        str(kind)
    )
    if choice is None:
        raise BadRequest(f"tool_choice.type: invalid value {kind!r}")
    name = tc.get("name") if kind == "tool" else None
    if kind == "tool" and not any(t.name == name for t in tools):
        raise BadRequest(f"tool_choice.name: no tool named {name!r}")
    fmt = ResponseFormat()
    of = body.get("output_format")
    if isinstance(of, dict) and of.get("type") == "json_schema":
        fmt = ResponseFormat("json_schema", of.get("schema") or {})
    stops = body.get("stop_sequences") or []
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=choice,
        tool_choice_name=name,
        parallel_tool_calls=not tc.get("disable_parallel_tool_use", False),
        response_format=fmt,
        max_tokens=max_tokens,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=[str(s) for s in arr(stops, "stop_sequences")],
        stream=bool(body.get("stream")),
    )


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def cache_hint(body: dict[str, Any]) -> CacheHint | None:
    """Prefix up to the last ``cache_control`` block, in the order tools, system, messages."""

    def elements() -> Iterator[tuple[Any, bool]]:
        for t in body.get("tools") or []:
            yield t, isinstance(t, dict) and "cache_control" in t
        system = body.get("system")
        for b in system if isinstance(system, list) else [system] if system else []:
            yield b, isinstance(b, dict) and "cache_control" in b
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            for b in content if isinstance(content, list) else [content]:
                yield b, isinstance(b, dict) and "cache_control" in b

    return prefix_hint(elements())


def _usage(call: Call, output: int) -> dict[str, Any]:
    a = call.answer
    return {
        "input_tokens": a.input_tokens - a.cache_read_tokens - a.cache_write_tokens,
        "cache_creation_input_tokens": a.cache_write_tokens,
        "cache_read_input_tokens": a.cache_read_tokens,
        "output_tokens": output,
        "service_tier": "standard",
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicWire(Wire):
    name = "anthropic"

    def error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> web.Response:
        headers = {"request-id": "req_sim"}
        if retry_after is not None:
            headers["retry-after"] = seconds(retry_after)
        if status == 429:
            headers["anthropic-ratelimit-requests-limit"] = "50"
            headers["anthropic-ratelimit-requests-remaining"] = "0"
        kind = error_type or _TYPES.get(status, "api_error")
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_sim",
        }
        return json_response(body, status, headers)

    def not_found(self, model: str) -> web.Response:
        return self.error(404, f"model: {model}")

    def headers(self, call: Call) -> dict[str, str]:
        return {"request-id": f"req_{call.id}", "anthropic-organization-id": "tiergate-sim"}

    def unary(self, call: Call) -> tuple[bytes, str]:
        a = call.answer
        content: list[dict[str, Any]] = []
        if a.text:
            content.append({"type": "text", "text": a.text})
        content += [
            {
                "type": "tool_use",
                "id": _tool_id(c.id),
                "name": c.name,
                "input": orjson.loads(c.arguments),
            }
            for c in a.tool_calls
        ]
        body = {
            "id": f"msg_{call.id}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": _STOP[a.finish],
            "stop_sequence": a.stop_sequence,
            "usage": _usage(call, a.output_tokens),
        }
        return orjson.dumps(body), "application/json"

    def frames(self, call: Call) -> list[Frame]:
        a = call.answer
        start: dict[str, Any] = {
            "id": f"msg_{call.id}", "type": "message", "role": "assistant", "model": call.model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(call, 1),
        }  # fmt: skip
        out = [Frame(_sse("message_start", {"type": "message_start", "message": start}))]
        ping = Frame(_sse("ping", {"type": "ping"}))
        index = 0
        if a.text_tokens:
            block = {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
            out += [Frame(_sse("content_block_start", block)), ping]
            for tok in a.text_tokens:
                delta = {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": tok},
                }
                out.append(Frame(_sse("content_block_delta", delta), 1))
            out.append(
                Frame(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
            )
            index = 1
        else:
            out.append(ping)
        for c, frags in zip(a.tool_calls, a.arg_tokens, strict=True):
            head = {"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": {}}
            out.append(
                Frame(
                    _sse(
                        "content_block_start",
                        {"type": "content_block_start", "index": index, "content_block": head},
                    )
                )
            )
            for f in frags:
                delta = {"type": "input_json_delta", "partial_json": f}
                out.append(
                    Frame(
                        _sse(
                            "content_block_delta",
                            {"type": "content_block_delta", "index": index, "delta": delta},
                        ),
                        1,
                    )
                )
            out.append(
                Frame(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            )
            index += 1
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[a.finish], "stop_sequence": a.stop_sequence},
            "usage": {"output_tokens": a.output_tokens},
        }
        out.append(Frame(_sse("message_delta", end), 0, True))
        out.append(Frame(_sse("message_stop", {"type": "message_stop"}), 0, True))
        return out

    def stream_error(self, call: Call, status: int, message: str, error_type: str | None) -> bytes:
        kind = error_type or _TYPES.get(status, "api_error")
        return _sse("error", {"type": "error", "error": {"type": kind, "message": message}})

    def malformed(self, call: Call) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "\n\n'


def routes(state: SimState) -> list[web.RouteDef]:
    wire = AnthropicWire()

    async def messages(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("x-api-key") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
        if not key.strip():
            return wire.error(401, "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return wire.error(400, "anthropic-version: header is required")
        try:
            body = await read_json(request)
            req = parse_messages(body)
        except BadRequest as exc:
            return wire.error(400, exc.message)
        return await serve(request, state, wire, req.model, req, cache_hint(body))

    async def count_tokens(request: web.Request) -> web.Response:
        from tiergate.sim.behaviour import count_input_tokens

        try:
            body = obj(await read_json(request), "body")
            req = parse_messages({**body, "max_tokens": 1})
        except BadRequest as exc:
            return wire.error(400, exc.message)
        return json_response({"input_tokens": count_input_tokens(req)})

    return [web.post("/v1/messages", messages), web.post("/v1/messages/count_tokens", count_tokens)]
