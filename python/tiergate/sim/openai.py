"""OpenAI chat completions: ``POST /v1/chat/completions``, ``GET /v1/models``.

Also the parser and renderer of SageMaker's ``openai_messages`` payload format.
"""

from __future__ import annotations

import math
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

__all__ = ["OpenAIWire", "chat_completion", "parse_chat", "routes"]

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "stop_sequence": "stop",
    "refusal": "stop",
    "blocked": "content_filter",
}


def _parts(content: Any, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for i, p in enumerate(arr(content, where)):
        p = obj(p, f"{where}.{i}")
        kind = p.get("type")
        if kind == "text" or kind == "refusal":
            parts.append(TextPart(str(p.get("text", p.get("refusal", "")))))
        elif kind == "image_url":
            url = obj(p.get("image_url"), f"{where}.{i}.image_url").get("url", "")
            parts.append(ImagePart(url=str(url)))
        elif kind in ("input_audio", "file"):
            parts.append(TextPart(""))
        else:
            raise BadRequest(
                f"{where}.{i}.type: unsupported content part {kind!r}", f"{where}.{i}.type"
            )
    return parts


def parse_chat(body: Any) -> ChatRequest:
    """An OpenAI chat-completions request body → ChatRequest (BadRequest when invalid)."""
    body = obj(body, "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    messages: list[Message] = []
    for i, m in enumerate(arr(body.get("messages"), "messages")):
        m = obj(m, f"messages.{i}")
        role = m.get("role")
        where = f"messages.{i}"
        if role in ("system", "developer"):
            messages.append(Message("system", _parts(m.get("content"), f"{where}.content")))
        elif role == "user":
            messages.append(
                Message("user", _parts(m.get("content"), f"{where}.content"), name=m.get("name"))
            )
        elif role == "assistant":
            calls = []
            for j, c in enumerate(m.get("tool_calls") or []):
                fn = obj(
                    obj(c, f"{where}.tool_calls.{j}").get("function"),
                    f"{where}.tool_calls.{j}.function",
                )
                calls.append(
                    ToolCall(
                        str(c.get("id", "")), str(fn.get("name", "")), str(fn.get("arguments", ""))
                    )
                )
            messages.append(
                Message("assistant", _parts(m.get("content"), f"{where}.content"), tool_calls=calls)
            )
        elif role == "tool":
            messages.append(
                Message(
                    "tool",
                    _parts(m.get("content"), f"{where}.content"),
                    tool_call_id=m.get("tool_call_id"),
                )
            )
        else:
            raise BadRequest(f"{where}.role: unknown role {role!r}", f"{where}.role")
    if not messages:
        raise BadRequest("messages: at least one message is required", "messages")
    tools = []
    for i, t in enumerate(body.get("tools") or []):
        fn = obj(obj(t, f"tools.{i}").get("function"), f"tools.{i}.function")
        if not isinstance(fn.get("name"), str):
            raise BadRequest(f"tools.{i}.function.name: required", f"tools.{i}.function.name")
        tools.append(
            Tool(fn["name"], str(fn.get("description") or ""), fn.get("parameters") or {"type": "object"},
                 bool(fn.get("strict")))
        )  # fmt: skip
    choice: Any = body.get("tool_choice", "auto")
    choice_name = None
    if isinstance(choice, dict):
        choice_name = obj(choice.get("function"), "tool_choice.function").get("name")
        choice = "function"
    if choice not in ("auto", "none", "required", "function"):
        raise BadRequest(f"tool_choice: invalid value {choice!r}", "tool_choice")
    if choice_name is not None and not any(t.name == choice_name for t in tools):
        raise BadRequest(f"tool_choice: no tool named {choice_name!r}", "tool_choice")
    rf = obj(body.get("response_format") or {"type": "text"}, "response_format")
    fmt = ResponseFormat()
    if rf.get("type") == "json_object":
        fmt = ResponseFormat("json_object")
    elif rf.get("type") == "json_schema":
        js = obj(rf.get("json_schema"), "response_format.json_schema")
        fmt = ResponseFormat(
            "json_schema",
            js.get("schema") or {},
            str(js.get("name", "response")),
            bool(js.get("strict")),
        )
    elif rf.get("type") not in ("text", None):
        raise BadRequest(
            f"response_format.type: invalid value {rf.get('type')!r}", "response_format.type"
        )
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("max_tokens: must be a positive integer", "max_tokens")
    opts = body.get("stream_options") or {}
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=choice,
        tool_choice_name=choice_name,
        parallel_tool_calls=body.get("parallel_tool_calls", True) is not False,
        response_format=fmt,
        max_tokens=max_tokens,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        seed=body.get("seed"),
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
    )


def cache_hint(body: dict[str, Any]) -> CacheHint | None:
    """Automatic caching: tools and every message but the last, when long enough."""
    messages = body.get("messages") or []
    if len(messages) < 2:
        return None
    items: list[tuple[Any, bool]] = [(t, False) for t in body.get("tools") or []]
    items += [(m, i == len(messages) - 2) for i, m in enumerate(messages[:-1])]
    return prefix_hint(items)


def _usage(call: Call) -> dict[str, Any]:
    a = call.answer
    return {
        "prompt_tokens": a.input_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens + a.output_tokens,
        "prompt_tokens_details": {"cached_tokens": a.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(call: Call) -> dict[str, Any]:
    a = call.answer
    refusal = a.finish == "refusal"
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if refusal or a.tool_calls else a.text,
        "refusal": a.text if refusal else None,
        "annotations": [],
    }
    if a.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in a.tool_calls
        ]
    return {
        "id": f"chatcmpl-{call.id}",
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH[a.finish]}
        ],
        "usage": _usage(call),
        "service_tier": "default",
        "system_fingerprint": "fp_tiergate_sim",
    }


def chunks(call: Call) -> list[tuple[dict[str, Any], int, bool]]:
    """(chunk, tokens, terminal) in stream order, without the ``[DONE]`` sentinel."""
    a = call.answer
    usage_field = {"usage": None} if call.req.include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{call.id}",
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": "fp_tiergate_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **usage_field,
        }

    out: list[tuple[dict[str, Any], int, bool]] = [
        (chunk({"role": "assistant", "content": "", "refusal": None}), 0, False)
    ]
    key = "refusal" if a.finish == "refusal" else "content"
    out += [(chunk({key: tok}), 1, False) for tok in a.text_tokens]
    for i, (c, frags) in enumerate(zip(a.tool_calls, a.arg_tokens, strict=True)):
        head = {
            "index": i,
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": ""},
        }
        out.append((chunk({"tool_calls": [head]}), 0, False))
        out += [
            (chunk({"tool_calls": [{"index": i, "function": {"arguments": f}}]}), 1, False)
            for f in frags
        ]
    out.append((chunk({}, _FINISH[a.finish]), 0, True))
    if call.req.include_usage:
        tail = chunk({})
        tail["choices"] = []
        tail["usage"] = _usage(call)
        out.append((tail, 0, True))
    return out


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
          404: "invalid_request_error", 429: "requests"}  # fmt: skip
_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


class OpenAIWire(Wire):
    name = "openai"

    def error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
        param: str | None = None,
    ) -> web.Response:
        headers = {"x-request-id": "req_sim"}
        if retry_after is not None:
            headers["retry-after"] = seconds(retry_after)
            headers["retry-after-ms"] = str(math.ceil(retry_after * 1000))
        if status == 429:
            headers.update(
                {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                 "x-ratelimit-reset-requests": f"{seconds(retry_after or 1.0)}s",
                 "x-ratelimit-limit-tokens": "1000000", "x-ratelimit-remaining-tokens": "0",
                 "x-ratelimit-reset-tokens": f"{seconds(retry_after or 1.0)}s"}
            )  # fmt: skip
        err = {
            "message": message,
            "type": error_type or _TYPES.get(status, "server_error"),
            "param": param,
            "code": _CODES.get(status),
        }
        return json_response({"error": err}, status, headers)

    def not_found(self, model: str) -> web.Response:
        return self.error(
            404, f"The model `{model}` does not exist or you do not have access to it."
        )

    def headers(self, call: Call) -> dict[str, str]:
        return {
            "x-request-id": f"req_{call.id}",
            "openai-processing-ms": str(call.latency_ms),
            "x-ratelimit-limit-requests": str(
                call.spec.limiter.rpm if call.spec.limiter else 10000
            ),
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
        }

    def unary(self, call: Call) -> tuple[bytes, str]:
        return orjson.dumps(chat_completion(call)), "application/json"

    def frames(self, call: Call) -> list[Frame]:
        out = [Frame(sse(orjson.dumps(c)), n, t) for c, n, t in chunks(call)]
        out.append(Frame(b"data: [DONE]\n\n", 0, True))
        return out

    def stream_error(self, call: Call, status: int, message: str, error_type: str | None) -> bytes:
        err = {
            "message": message,
            "type": error_type or _TYPES.get(status, "server_error"),
            "param": None,
            "code": _CODES.get(status),
        }
        return sse(orjson.dumps({"error": err}))

    def malformed(self, call: Call) -> bytes:
        return sse(
            b'{"id": "chatcmpl-' + call.id.encode() + b'", "choices": [{"delta": {"content": "'
        )


def _authorized(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    return auth.startswith("Bearer ") and bool(auth[7:].strip())


def routes(state: SimState) -> list[web.RouteDef]:
    wire = OpenAIWire()

    def unauthorized() -> web.Response:
        return wire.error(
            401, "You didn't provide an API key. Provide it as `Authorization: Bearer YOUR_KEY`."
        )

    async def completions(request: web.Request) -> web.StreamResponse:
        if not _authorized(request):
            return unauthorized()
        try:
            body = await read_json(request)
            req = parse_chat(body)
        except BadRequest as exc:
            return wire.error(400, exc.message, param=exc.param)
        return await serve(request, state, wire, req.model, req, cache_hint(body))

    def model_obj(m: str) -> dict[str, Any]:
        return {"id": m, "object": "model", "created": 1700000000, "owned_by": "tiergate-sim"}

    async def models(request: web.Request) -> web.Response:
        if not _authorized(request):
            return unauthorized()
        return json_response({"object": "list", "data": [model_obj(m) for m in state.models]})

    async def model(request: web.Request) -> web.Response:
        if not _authorized(request):
            return unauthorized()
        m = request.match_info["model"]
        return json_response(model_obj(m)) if m in state.models else wire.not_found(m)

    return [
        web.post("/v1/chat/completions", completions),
        web.get("/v1/models", models),
        web.get("/v1/models/{model:.+}", model),
    ]
