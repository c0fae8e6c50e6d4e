"""Bedrock Runtime Converse: ``POST /model/{modelId}/converse`` and ``/converse-stream``.

ConverseStream answers ``application/vnd.amazon.eventstream`` framed by
:mod:`tiergate.sim.eventstream`. Errors before the stream are JSON with
``x-amzn-ErrorType``; during it, ``:message-type`` = exception frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

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
from tiergate.sim import eventstream
from tiergate.sim.aws import aws_error, signed
from tiergate.sim.cache import CacheHint, prefix_hint
from tiergate.sim.flow import Call, Frame, Wire, serve
from tiergate.sim.http import BadRequest, arr, obj, read_json
from tiergate.sim.state import SimState

__all__ = ["BedrockWire", "parse_converse", "routes"]

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filtered",
    "blocked": "guardrail_intervened",
}
_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}

_STREAM_TYPES = {
    400: "validationException",
    429: "throttlingException",
    500: "internalServerException",
    503: "serviceUnavailableException",
}


def _result_text(content: Any, where: str) -> str:
    out = []
    for i, b in enumerate(arr(content or [], where)):
        b = obj(b, f"{where}[{i}]")
        if "text" in b:
            out.append(str(b["text"]))
        elif "json" in b:
            out.append(orjson.dumps(b["json"]).decode())
    return "".join(out)


def _content(content: Any, where: str) -> tuple[list[Part], list[ToolCall], list[Message]]:
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, b in enumerate(arr(content, where)):
        b = obj(b, f"{where}[{i}]")
        if "text" in b:
            parts.append(TextPart(str(b["text"])))
        elif "image" in b or "document" in b or "video" in b:
            parts.append(ImagePart(url=""))
        elif "toolUse" in b:
            tu = obj(b["toolUse"], f"{where}[{i}].toolUse")
            calls.append(
                ToolCall(
                    str(tu.get("toolUseId", "")),
                    str(tu.get("name", "")),
                    orjson.dumps(tu.get("input", {})).decode(),
                )
            )
        elif "toolResult" in b:
            tr = obj(b["toolResult"], f"{where}[{i}].toolResult")
            text = _result_text(tr.get("content"), f"{where}[{i}].toolResult.content")
            results.append(
                Message("tool", [TextPart(text)], tool_call_id=str(tr.get("toolUseId", "")))
            )
    return parts, calls, results


def parse_converse(model: str, body: Any, stream: bool) -> ChatRequest:
    body = obj(body, "body")
    messages: list[Message] = []
    system = [
        str(s["text"])
        for s in arr(body.get("system") or [], "system")
        if isinstance(s, dict) and "text" in s
    ]
    if system:
        messages.append(Message("system", [TextPart("\n".join(system))]))
    raw = arr(body.get("messages"), "messages")
    if not raw:
        raise BadRequest(
            "The model returned the following errors: messages: at least one message is required"
        )
    for i, m in enumerate(raw):
        m = obj(m, f"messages[{i}]")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages[{i}].role: must be user or assistant")
        parts, calls, results = _content(m.get("content"), f"messages[{i}].content")
        messages.extend(results)
        if parts or calls or not results:
            messages.append(Message(role, parts, tool_calls=calls))
    ic = obj(body.get("inferenceConfig") or {}, "inferenceConfig")
    tc = obj(body.get("toolConfig") or {}, "toolConfig")
    tools = []
    for i, t in enumerate(tc.get("tools") or []):
        spec = obj(t, f"toolConfig.tools[{i}]").get("toolSpec")
        if spec is None:
            continue
        spec = obj(spec, f"toolConfig.tools[{i}].toolSpec")
        schema = obj(
            spec.get("inputSchema") or {}, f"toolConfig.tools[{i}].toolSpec.inputSchema"
        ).get("json")
        tools.append(
            Tool(
                str(spec.get("name", "")),
                str(spec.get("description") or ""),
                schema or {"type": "object"},
            )
        )
    choice: Any = "auto"
    name = None
    ch = tc.get("toolChoice")
    if isinstance(ch, dict):
        if "any" in ch:
            choice = "required"
        elif "tool" in ch:
            choice, name = (
                "function",
                str(obj(ch["tool"], "toolConfig.toolChoice.tool").get("name")),
            )
            if not any(t.name == name for t in tools):
                raise BadRequest(f"toolConfig.toolChoice.tool.name: no tool named {name}")
    if tc and not tools:
        raise BadRequest("toolConfig.tools: at least one tool is required")
    fmt = ResponseFormat()
    max_tokens = ic.get("maxTokens")
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=choice,
        tool_choice_name=name,
        response_format=fmt,
        max_tokens=int(max_tokens) if max_tokens else None,
        temperature=ic.get("temperature"),
        top_p=ic.get("topP"),
        stop=[str(s) for s in ic.get("stopSequences") or []],
        stream=stream,
    )


def cache_hint(body: dict[str, Any]) -> CacheHint | None:
    """Prefix up to the last ``cachePoint`` block, in the order tools, system, messages."""

    def elements() -> Iterator[tuple[Any, bool]]:
        tc = body.get("toolConfig")
        for t in tc.get("tools") or [] if isinstance(tc, dict) else []:
            yield t, isinstance(t, dict) and "cachePoint" in t
        for b in body.get("system") or []:
            yield b, isinstance(b, dict) and "cachePoint" in b
        for m in body.get("messages") or []:
            for b in (m.get("content") if isinstance(m, dict) else None) or []:
                yield b, isinstance(b, dict) and "cachePoint" in b

    return prefix_hint(elements())


def _tool_id(call_id: str) -> str:
    return "tooluse_" + call_id.removeprefix("call_")


class BedrockWire(Wire):
    name = "bedrock"
    stream_content_type = "application/vnd.amazon.eventstream"

    def error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> web.Response:
        kind = error_type or _TYPES.get(
            status, "InternalServerException" if status < 503 else "ServiceUnavailableException"
        )
        return aws_error(status, kind, message, retry_after=retry_after)

    def not_found(self, model: str) -> web.Response:
        return self.error(400, "The provided model identifier is invalid.")

    def headers(self, call: Call) -> dict[str, str]:
        return {"x-amzn-RequestId": call.id}

    def _usage(self, call: Call) -> dict[str, Any]:
        a = call.answer
        return {
            "inputTokens": a.input_tokens - a.cache_read_tokens - a.cache_write_tokens,
            "outputTokens": a.output_tokens,
            "totalTokens": a.input_tokens + a.output_tokens,
            "cacheReadInputTokens": a.cache_read_tokens,
            "cacheWriteInputTokens": a.cache_write_tokens,
        }

    def unary(self, call: Call) -> tuple[bytes, str]:
        a = call.answer
        content: list[dict[str, Any]] = [{"text": a.text}] if a.text else []
        content += [
            {
                "toolUse": {
                    "toolUseId": _tool_id(c.id),
                    "name": c.name,
                    "input": orjson.loads(c.arguments),
                }
            }
            for c in a.tool_calls
        ]
        body = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _STOP[a.finish],
            "usage": self._usage(call),
            "metrics": {"latencyMs": call.latency_ms},
        }
        return orjson.dumps(body), "application/json"

    def frames(self, call: Call) -> list[Frame]:
        a = call.answer

        def ev(
            kind: str, payload: dict[str, Any], tokens: int = 0, terminal: bool = False
        ) -> Frame:
            return Frame(eventstream.event(kind, orjson.dumps(payload)), tokens, terminal)

        out = [ev("messageStart", {"role": "assistant"})]
        index = 0
        if a.text_tokens:
            out += [
                ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}, 1)
                for t in a.text_tokens
            ]
            out.append(ev("contentBlockStop", {"contentBlockIndex": 0}))
            index = 1
        for c, frags in zip(a.tool_calls, a.arg_tokens, strict=True):
            start = {"toolUse": {"toolUseId": _tool_id(c.id), "name": c.name}}
            out.append(ev("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            out += [
                ev(
                    "contentBlockDelta",
                    {"contentBlockIndex": index, "delta": {"toolUse": {"input": f}}},
                    1,
                )
                for f in frags
            ]
            out.append(ev("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        out.append(ev("messageStop", {"stopReason": _STOP[a.finish]}, terminal=True))
        meta = {"usage": self._usage(call), "metrics": {"latencyMs": call.latency_ms}}
        out.append(ev("metadata", meta, terminal=True))
        return out

    def stream_error(self, call: Call, status: int, message: str, error_type: str | None) -> bytes:
        if error_type is None:
            error_type = _STREAM_TYPES.get(status, "modelStreamErrorException")
        payload: dict[str, Any] = {"message": message}
        if error_type == "modelStreamErrorException":
            payload.update(originalStatusCode=status, originalMessage=message)
        return eventstream.exception(error_type, orjson.dumps(payload))

    def malformed(self, call: Call) -> bytes:
        return eventstream.event(
            "contentBlockDelta", b'{"contentBlockIndex": 0, "delta": {"text": "'
        )


def routes(state: SimState) -> list[web.RouteDef]:
    wire = BedrockWire()

    async def converse(request: web.Request) -> web.StreamResponse:
        if not signed(request):
            return aws_error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        model = unquote(request.match_info["model"])
        stream = request.path.endswith("/converse-stream")
        try:
            body = await read_json(request)
            req = parse_converse(model, body, stream)
        except BadRequest as exc:
            return wire.error(400, exc.message)
        return await serve(request, state, wire, model, req, cache_hint(body))

    return [
        web.post("/model/{model}/converse", converse),
        web.post("/model/{model}/converse-stream", converse),
    ]
