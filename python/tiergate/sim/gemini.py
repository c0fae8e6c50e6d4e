"""Gemini REST: ``POST /{v1beta,v1}/models/{model}:generateContent`` and
``:streamGenerateContent`` (``?alt=sse`` for server-sent events, else a JSON array).

The key comes in ``x-goog-api-key`` or ``?key=``. Response schemas may use the OpenAPI
subset with upper-case type names (``"OBJECT"``); both cases are accepted.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tiergate.envelope import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    Role,
    TextPart,
    Tool,
    ToolCall,
)
from tiergate.sim.flow import Call, Frame, Wire, serve
from tiergate.sim.http import BadRequest, arr, json_response, obj, read_json, seconds
from tiergate.sim.state import SimState

__all__ = ["GeminiWire", "parse_generate", "routes"]

_FINISH = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "stop_sequence": "STOP",
    "refusal": "SAFETY",
    "blocked": "SAFETY",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_TEXT_PER_CHUNK = 4


def _parts(parts: Any, where: str) -> tuple[list[Part], list[ToolCall], list[Message]]:
    out: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, p in enumerate(arr(parts or [], where)):
        p = obj(p, f"{where}.{i}")
        if "text" in p:
            if not p.get("thought"):
                out.append(TextPart(str(p["text"])))
        elif "inlineData" in p or "inline_data" in p:
            d = obj(p.get("inlineData", p.get("inline_data")), f"{where}.{i}.inlineData")
            out.append(ImagePart(url="", media_type=d.get("mimeType"), data_b64=d.get("data")))
        elif "fileData" in p:
            out.append(
                ImagePart(url=str(obj(p["fileData"], f"{where}.{i}.fileData").get("fileUri", "")))
            )
        elif "functionCall" in p:
            fc = obj(p["functionCall"], f"{where}.{i}.functionCall")
            name = str(fc.get("name", ""))
            calls.append(
                ToolCall(str(fc.get("id") or name), name, orjson.dumps(fc.get("args", {})).decode())
            )
        elif "functionResponse" in p:
            fr = obj(p["functionResponse"], f"{where}.{i}.functionResponse")
            name = str(fr.get("name", ""))
            text = orjson.dumps(fr.get("response", {})).decode()
            results.append(
                Message("tool", [TextPart(text)], tool_call_id=str(fr.get("id") or name), name=name)
            )
    return out, calls, results


def parse_generate(model: str, body: Any, stream: bool) -> ChatRequest:
    body = obj(body, "body")
    messages: list[Message] = []
    sys_ = body.get("systemInstruction") or body.get("system_instruction")
    if sys_:
        parts, _, _ = _parts(obj(sys_, "systemInstruction").get("parts"), "systemInstruction.parts")
        messages.append(Message("system", parts))
    contents = arr(body.get("contents"), "contents")
    for i, c in enumerate(contents):
        c = obj(c, f"contents[{i}]")
        role: Role = "assistant" if c.get("role") == "model" else "user"
        parts, calls, results = _parts(c.get("parts"), f"contents[{i}].parts")
        messages.extend(results)
        if parts or calls or not results:
            messages.append(Message(role, parts, tool_calls=calls))
    if not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    tools: list[Tool] = []
    for i, t in enumerate(body.get("tools") or []):
        for j, fd in enumerate(obj(t, f"tools[{i}]").get("functionDeclarations") or []):
            fd = obj(fd, f"tools[{i}].functionDeclarations[{j}]")
            schema = fd.get("parametersJsonSchema") or fd.get("parameters") or {"type": "object"}
            tools.append(Tool(str(fd.get("name", "")), str(fd.get("description") or ""), schema))
    fcc = obj(
        obj(body.get("toolConfig") or {}, "toolConfig").get("functionCallingConfig") or {},
        "functionCallingConfig",
    )
    mode = str(fcc.get("mode", "AUTO")).upper()
    allowed = [str(n) for n in fcc.get("allowedFunctionNames") or []]
    choice: Any = {
        "AUTO": "auto",
        "ANY": "required",
        "VALIDATED": "auto",
        "NONE": "none",
        "MODE_UNSPECIFIED": "auto",
    }.get(mode)
    if choice is None:
        raise BadRequest(f"toolConfig.functionCallingConfig.mode: invalid value {mode!r}")
    name = None
    if choice == "required" and allowed:
        tools_allowed = [t for t in tools if t.name in allowed]
        if len(allowed) == 1:
            choice, name = "function", allowed[0]
        elif tools_allowed:
            tools = tools_allowed
    gc = obj(body.get("generationConfig") or {}, "generationConfig")
    fmt = ResponseFormat()
    if gc.get("responseJsonSchema") is not None or gc.get("responseSchema") is not None:
        fmt = ResponseFormat(
            "json_schema", gc.get("responseJsonSchema") or gc.get("responseSchema")
        )
    elif gc.get("responseMimeType") == "application/json":
        fmt = ResponseFormat("json_object")
    max_tokens = gc.get("maxOutputTokens")
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=choice,
        tool_choice_name=name,
        response_format=fmt,
        max_tokens=int(max_tokens) if max_tokens else None,
        temperature=gc.get("temperature"),
        top_p=gc.get("topP"),
        stop=[str(s) for s in gc.get("stopSequences") or []],
        stream=stream,
    )


class GeminiWire(Wire):
    name = "gemini"

    def __init__(self, sse: bool = True) -> None:
        self.sse = sse
        self.stream_content_type = "text/event-stream" if sse else "application/json"

    def error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> web.Response:
        err: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": error_type or _STATUS.get(status, "UNKNOWN"),
        }
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = seconds(retry_after)
            err["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{seconds(retry_after)}s",
                }
            ]
        return json_response({"error": err}, status, headers)

    def not_found(self, model: str) -> web.Response:
        return self.error(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for generateContent.",
        )

    def _usage(self, call: Call) -> dict[str, Any]:
        a = call.answer
        return {
            "promptTokenCount": a.input_tokens,
            "candidatesTokenCount": a.output_tokens,
            "totalTokenCount": a.input_tokens + a.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": a.input_tokens}],
        }

    def _response(self, call: Call, parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
        a = call.answer
        out: dict[str, Any] = {"modelVersion": call.model, "responseId": call.id}
        if a.finish == "blocked":
            out["promptFeedback"] = {"blockReason": "SAFETY"}
            out["usageMetadata"] = {
                "promptTokenCount": a.input_tokens,
                "totalTokenCount": a.input_tokens,
            }
            return out
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            cand["finishReason"] = _FINISH[a.finish]
            if a.finish == "refusal":
                cand["content"] = {"parts": [], "role": "model"}
                cand["safetyRatings"] = [
                    {
                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH",
                        "blocked": True,
                    }
                ]
        out["candidates"] = [cand]
        if final:
            out["usageMetadata"] = self._usage(call)
        return out

    def _call_parts(self, call: Call) -> list[dict[str, Any]]:
        return [
            {"functionCall": {"id": c.id, "name": c.name, "args": orjson.loads(c.arguments)}}
            for c in call.answer.tool_calls
        ]

    def unary(self, call: Call) -> tuple[bytes, str]:
        a = call.answer
        parts = ([{"text": a.text}] if a.text else []) + self._call_parts(call)
        return orjson.dumps(self._response(call, parts, True)), "application/json"

    def _frame(self, data: dict[str, Any], first: bool, last: bool) -> bytes:
        body = orjson.dumps(data)
        if self.sse:
            return b"data: " + body + b"\r\n\r\n"
        return (b"[" if first else b",\r\n") + body + (b"]" if last else b"")

    def frames(self, call: Call) -> list[Frame]:
        a = call.answer
        groups: list[tuple[list[dict[str, Any]], int]] = []
        toks = a.text_tokens if a.finish != "refusal" else []
        for i in range(0, len(toks), _TEXT_PER_CHUNK):
            piece = toks[i : i + _TEXT_PER_CHUNK]
            groups.append(([{"text": "".join(piece)}], len(piece)))
        if a.tool_calls:
            groups.append((self._call_parts(call), sum(len(f) for f in a.arg_tokens)))
        if not groups:
            groups.append(([], 0))
        out = []
        for i, (parts, n) in enumerate(groups):
            last = i == len(groups) - 1
            out.append(Frame(self._frame(self._response(call, parts, last), i == 0, last), n, last))
        return out

    def stream_error(self, call: Call, status: int, message: str, error_type: str | None) -> bytes:
        err = {
            "code": status,
            "message": message,
            "status": error_type or _STATUS.get(status, "UNKNOWN"),
        }
        body = orjson.dumps({"error": err})
        return b"data: " + body + b"\r\n\r\n" if self.sse else b",\r\n" + body + b"]"

    def malformed(self, call: Call) -> bytes:
        bad = b'{"candidates": [{"content": {"parts": [{"text": "'
        return b"data: " + bad + b"\r\n\r\n" if self.sse else b",\r\n" + bad


def routes(state: SimState) -> list[web.RouteDef]:
    async def generate(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        model, _, method = tail.rpartition(":")
        stream = method == "streamGenerateContent"
        wire = GeminiWire(sse=request.query.get("alt") == "sse")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return wire.error(404, f"Method not found: {tail}", error_type="NOT_FOUND")
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return wire.error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        try:
            req = parse_generate(model, await read_json(request), stream)
        except BadRequest as exc:
            return wire.error(400, exc.message)
        return await serve(request, state, wire, model, req)

    async def list_models(request: web.Request) -> web.Response:
        models = [
            {
                "name": f"models/{m}",
                "displayName": m,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            }
            for m in state.models
        ]
        return json_response({"models": models})

    return [
        web.post("/v1beta/models/{tail:.+}", generate),
        web.post("/v1/models/{tail:.+}", generate),
        web.get("/v1beta/models", list_models),
    ]
