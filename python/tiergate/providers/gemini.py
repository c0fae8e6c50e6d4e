"""Gemini REST (``models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``).

Translation choices:

- the API version is ``/v1beta`` unless the base URL already ends with ``/v1`` or
  ``/v1beta``; the key travels in ``x-goog-api-key`` (never in the query string, which
  ends up in access logs);
- system messages join into ``systemInstruction``; assistant turns are ``model``;
  tool results are ``functionResponse`` parts in a user turn, named by looking the
  call id up in the earlier assistant turns (Gemini's calls carry no ids: when the
  answer has none, a stable id is derived from the call's position, name and
  arguments);
- JSON Schema (tool parameters, ``json_schema`` answers) is converted to Gemini's
  OpenAPI subset: ``$ref`` inlined, type unions → ``nullable``/``anyOf``, unsupported
  keywords (``additionalProperties``, ``$schema``, ``const``…) dropped;
- a blocked prompt (``promptFeedback.blockReason``) or a safety stop is a completed
  answer with finish reason ``content_filter``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tiergate.config import DeploymentConfig, ProviderConfig
from tiergate.envelope import ChatRequest, ImagePart, Message, TextPart, ToolCall
from tiergate.errors import ProviderError
from tiergate.providers._http import HttpAdapter
from tiergate.providers.base import (
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tiergate.providers.normalise import (
    SSEEvent,
    args_to_json,
    args_to_object,
    check_json_completion,
    cut_stream,
    finish_reason,
    in_stream_error,
    malformed,
    reads_answer,
    usage_gemini,
)

__all__ = [
    "GeminiAdapter",
    "GeminiStreamParser",
    "build_gemini_request",
    "gemini_call_id",
    "gemini_schema",
    "parse_gemini_response",
]

# --------------------------------------------------------------------------------------
# JSON Schema → Gemini Schema (OpenAPI 3.0 subset)

_KEEP = frozenset(
    {
        "description",
        "title",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "pattern",
        "default",
        "example",
        "propertyOrdering",
    }
)
_FORMATS = frozenset({"enum", "date-time", "int32", "int64", "float", "double"})
_MAX_DEPTH = 24


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as Gemini's ``Schema`` object (types upper case)."""
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        d = schema.get(key)
        if isinstance(d, dict):
            defs.update({f"#/{key}/{k}": v for k, v in d.items()})
    return _convert(schema, defs, 0)


def _convert(node: Any, defs: dict[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return {"type": "STRING"} if depth > _MAX_DEPTH else {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref)
        merged = {**(target if isinstance(target, dict) else {}), **node}
        merged.pop("$ref")
        return _convert(merged, defs, depth + 1)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged = dict(node)
        merged.pop("allOf")
        for sub in all_of:
            if isinstance(sub, dict):
                for k, v in sub.items():
                    merged.setdefault(k, v)
        return _convert(merged, defs, depth + 1)
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
    typ = node.get("type")
    nullable = bool(node.get("nullable"))
    if isinstance(typ, list):
        kinds = [t for t in typ if t != "null"]
        nullable = nullable or len(kinds) < len(typ)
        if len(kinds) == 1:
            typ = kinds[0]
        elif kinds:
            variants = [_convert({**node, "type": t}, defs, depth + 1) for t in kinds]
            out = {"anyOf": variants}
            if nullable:
                out["nullable"] = True
            return out
        else:
            typ = None
    if typ is None:
        if "properties" in node:
            typ = "object"
        elif "items" in node:
            typ = "array"
        elif "enum" in node or "const" in node:
            typ = "string"
    if isinstance(typ, str) and typ != "null":
        out["type"] = typ.upper()
    elif typ == "null":
        nullable = True
    if nullable:
        out["nullable"] = True
    enum = node.get("enum")
    if "const" in node:
        enum = [node["const"]]
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        out["enum"] = enum
        out["type"] = "STRING"
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        out["format"] = fmt
    props = node.get("properties")
    if isinstance(props, dict):
        out["properties"] = {k: _convert(v, defs, depth + 1) for k, v in props.items()}
        req = node.get("required")
        if isinstance(req, list):
            kept = [r for r in req if r in props]
            if kept:
                out["required"] = kept
    items = node.get("items")
    if isinstance(items, dict):
        out["items"] = _convert(items, defs, depth + 1)
    any_of = node.get("anyOf", node.get("oneOf"))
    if isinstance(any_of, list):
        variants = []
        for v in any_of:
            if isinstance(v, dict) and v.get("type") == "null":
                out["nullable"] = True
            else:
                variants.append(_convert(v, defs, depth + 1))
        if len(variants) == 1 and "type" not in out:
            out.update(variants[0])
        elif variants:
            out["anyOf"] = variants
    return out


# --------------------------------------------------------------------------------------
# Request


def gemini_call_id(index: int, name: str, args: str) -> str:
    """A stable id for a Gemini function call (which carries none)."""
    digest = hashlib.blake2b(f"{index}\0{name}\0{args}".encode(), digest_size=9).hexdigest()
    return f"call_{digest}"


def _guess_mime(url: str) -> str:
    lower = url.lower().split("?", 1)[0]
    for ext, mime in ((".png", "image/png"), (".webp", "image/webp"), (".gif", "image/gif")):
        if lower.endswith(ext):
            return mime
    return "image/jpeg"


def _parts(msg: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, ImagePart):
            if p.data_b64 is not None:
                out.append(
                    {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data_b64}}
                )
            else:
                out.append({"fileData": {"mimeType": _guess_mime(p.url), "fileUri": p.url}})
    return out


def _tool_response(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"output": text}
    return value if isinstance(value, dict) else {"output": value}


def build_gemini_contents(messages: list[Message]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.role
        if role == "system":
            continue
        if role == "assistant":
            parts = _parts(msg)
            for c in msg.tool_calls:
                names[c.id] = c.name
                parts.append(
                    {"functionCall": {"name": c.name, "args": args_to_object(c.arguments)}}
                )
            grole = "model"
        elif role == "tool":
            name = names.get(msg.tool_call_id or "") or msg.name or "tool"
            parts = [{"functionResponse": {"name": name, "response": _tool_response(msg.text)}}]
            grole = "user"
        else:
            parts = _parts(msg)
            grole = "user"
        if not parts:
            continue
        if out and out[-1]["role"] == grole:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": grole, "parts": parts})
    return out


def build_gemini_request(request: ChatRequest, deployment: DeploymentConfig) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": build_gemini_contents(request.messages)}
    system = request.system_text
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        decls = []
        for t in request.tools:
            decl: dict[str, Any] = {"name": t.name, "description": t.description}
            params = gemini_schema(t.parameters)
            if params.get("properties"):
                decl["parameters"] = params
            decls.append(decl)
        body["tools"] = [{"functionDeclarations": decls}]
        mode = request.tool_choice
        fcc: dict[str, Any]
        if mode == "none":
            fcc = {"mode": "NONE"}
        elif mode == "required":
            fcc = {"mode": "ANY"}
        elif mode == "function":
            fcc = {"mode": "ANY", "allowedFunctionNames": [request.tool_choice_name or ""]}
        else:
            fcc = {"mode": "AUTO"}
        body["toolConfig"] = {"functionCallingConfig": fcc}
    gen: dict[str, Any] = {"maxOutputTokens": request.max_tokens or deployment.max_output_tokens}
    if request.temperature is not None:
        gen["temperature"] = request.temperature
    if request.top_p is not None:
        gen["topP"] = request.top_p
    if request.stop:
        gen["stopSequences"] = request.stop
    if request.seed is not None:
        gen["seed"] = request.seed
    rf = request.response_format
    if rf.kind != "text":
        gen["responseMimeType"] = "application/json"
        if rf.kind == "json_schema" and rf.schema:
            gen["responseSchema"] = gemini_schema(rf.schema)
    body["generationConfig"] = gen
    return body


# --------------------------------------------------------------------------------------
# Response


def _candidate_parts(cand: dict[str, Any]) -> list[dict[str, Any]]:
    content = cand.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else []


@reads_answer("response")
def parse_gemini_response(doc: Any, *, model: str = "", provider: str = "") -> Completion:
    if not isinstance(doc, dict):
        raise malformed("generateContent response (not an object)", provider)
    usage = usage_gemini(doc.get("usageMetadata"))
    answered = doc.get("modelVersion") or model
    candidates = doc.get("candidates")
    if not candidates:
        feedback = doc.get("promptFeedback") or {}
        if feedback.get("blockReason"):
            return Completion(
                text=None,
                finish_reason="content_filter",
                usage=usage,
                model=answered,
                provider_response_id=doc.get("responseId") or "",
            )
        raise malformed("generateContent response (no candidates)", provider)
    cand = candidates[0]
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in _candidate_parts(cand):
        if "text" in part and not part.get("thought"):
            texts.append(part["text"])
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            name = fc.get("name") or ""
            args = args_to_json(fc.get("args") or {})
            call_id = fc.get("id") or gemini_call_id(len(calls), name, args)
            calls.append(ToolCall(id=call_id, name=name, arguments=args))
    raw = cand.get("finishReason")
    reason: FinishReason = finish_reason(raw)
    if raw == "MALFORMED_FUNCTION_CALL":
        raise malformed("function call (finishReason MALFORMED_FUNCTION_CALL)", provider)
    if calls and reason == "stop":
        reason = "tool_calls"
    return Completion(
        text="".join(texts) if texts else None,
        finish_reason=reason,
        usage=usage,
        model=answered,
        tool_calls=calls,
        provider_response_id=doc.get("responseId") or "",
    )


def stream_error(err: Any, provider: str = "") -> ProviderError:
    """An ``{"error": ...}`` document sent inside a stream."""
    return in_stream_error(err, ("status",), provider)


class GeminiStreamParser:
    """streamGenerateContent SSE (each event a whole GenerateContentResponse).

    Gemini has no terminal event: the stream is complete when the body ends after a
    candidate carried ``finishReason`` (or the prompt was blocked); sooner is a cut.
    """

    __slots__ = ("_calls", "_finish", "_model", "_usage", "done", "provider")

    def __init__(self, provider: str = "", model: str = "") -> None:
        self.provider = provider
        self.done = False
        self._model = model
        self._usage = Usage()
        self._calls = 0
        self._finish: str | None = None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        try:
            doc = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise malformed("stream chunk (not JSON)", self.provider) from None
        if not isinstance(doc, dict):
            raise malformed("stream chunk (not an object)", self.provider)
        if "error" in doc:
            raise stream_error(doc["error"], self.provider)
        if doc.get("usageMetadata"):
            self._usage = usage_gemini(doc["usageMetadata"])
        if doc.get("modelVersion"):
            self._model = doc["modelVersion"]
        out: list[StreamEvent] = []
        candidates = doc.get("candidates")
        if not candidates:
            feedback = doc.get("promptFeedback") or {}
            if feedback.get("blockReason"):
                self._finish = "SAFETY"
            return out
        cand = candidates[0]
        for part in _candidate_parts(cand):
            text = part.get("text")
            if text and not part.get("thought"):
                out.append(TextDelta(text))
            fc = part.get("functionCall")
            if isinstance(fc, dict):
                name = fc.get("name") or ""
                args = args_to_json(fc.get("args") or {})
                index = self._calls
                self._calls += 1
                call_id = fc.get("id") or gemini_call_id(index, name, args)
                out.append(ToolCallDelta(index=index, id=call_id, name=name, arguments=args))
        raw = cand.get("finishReason")
        if raw:
            if raw == "MALFORMED_FUNCTION_CALL":
                raise malformed(
                    "function call (finishReason MALFORMED_FUNCTION_CALL)", self.provider
                )
            self._finish = raw
        return out

    def finish(self) -> list[StreamEvent]:
        if self._finish is None:
            raise cut_stream(self.provider)
        self.done = True
        reason = finish_reason(self._finish)
        if self._calls and reason == "stop":
            reason = "tool_calls"
        return [StreamEnd(finish_reason=reason, usage=self._usage, model=self._model)]


class GeminiAdapter(HttpAdapter):
    """Gemini API: ``x-goog-api-key``; one URL pair per model, built once."""

    __slots__ = ("_api", "_urls")

    default_base_url = "https://generativelanguage.googleapis.com"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        base = self.base_url
        self._api = base if base.endswith(("/v1", "/v1beta")) else f"{base}/v1beta"
        self._urls: dict[str, tuple[str, str]] = {}

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    def urls(self, model: str) -> tuple[str, str]:
        """(generateContent, streamGenerateContent?alt=sse) URLs for ``model``."""
        urls = self._urls.get(model)
        if urls is None:
            path = model if "/" in model else f"models/{model}"
            prefix = f"{self._api}/{path}"
            urls = (f"{prefix}:generateContent", f"{prefix}:streamGenerateContent?alt=sse")
            self._urls[model] = urls
        return urls

    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        body = build_gemini_request(request, deployment)
        doc = await self._post_json(self.urls(deployment.model)[0], body, timeout_s)
        completion = parse_gemini_response(doc, model=deployment.model, provider=self.name)
        check_json_completion(completion, request.response_format, self.name)
        return completion

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        body = build_gemini_request(request, deployment)
        parser = GeminiStreamParser(self.name, deployment.model)
        return self._stream(self.urls(deployment.model)[1], body, timeout_s, parser)
