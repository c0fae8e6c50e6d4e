"""OpenAI chat completions (kinds ``openai`` and ``openai_compatible``).

The canonical request is already OpenAI-shaped, so translation is mostly renaming. The
differences between the two kinds: the output bound is ``max_completion_tokens`` for
OpenAI itself and ``max_tokens`` for compatible servers (vLLM, TGI, llama.cpp, Azure-
style gateways), which mostly do not know the newer name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from tiergate import _core
from tiergate.config import DeploymentConfig, ProviderConfig
from tiergate.envelope import ChatRequest, ImagePart, Message, TextPart, ToolCall
from tiergate.errors import ProviderError
from tiergate.providers._http import HttpAdapter, json_body
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
    check_json_completion,
    cut_stream,
    finish_reason,
    in_stream_error,
    malformed,
    reads_answer,
    usage_openai,
)
from tiergate.providers.relay import RelayStream

__all__ = [
    "OpenAIAdapter",
    "OpenAIStreamParser",
    "build_openai_messages",
    "build_openai_request",
    "completion_from_body",
    "openai_body",
    "parse_openai_response",
]


def _image_url(part: ImagePart) -> str:
    if part.data_b64 is not None and not part.url.startswith("data:"):
        return f"data:{part.media_type or 'image/png'};base64,{part.data_b64}"
    return part.url


def _content(msg: Message) -> str | list[dict[str, Any]]:
    parts = msg.parts
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    if all(isinstance(p, TextPart) for p in parts):
        return msg.text
    return [
        {"type": "text", "text": p.text}
        if isinstance(p, TextPart)
        else {"type": "image_url", "image_url": {"url": _image_url(p)}}
        for p in parts
    ]


def build_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.role
        if role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": msg.tool_call_id or "", "content": msg.text}
            )
            continue
        m: dict[str, Any] = {"role": role}
        if role == "assistant":
            text = msg.text
            m["content"] = text if text or not msg.tool_calls else None
            if msg.tool_calls:
                m["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in msg.tool_calls
                ]
        elif role == "system":
            m["content"] = msg.text
        else:
            m["content"] = _content(msg)
        if msg.name:
            m["name"] = msg.name
        out.append(m)
    return out


# A streamed body's last members: the usage is asked for so that cost is known.
_STREAM_MEMBERS: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
_STREAM_REST = orjson.dumps(_STREAM_MEMBERS)  # they alone, as openai_chat_body takes them


def build_openai_request(
    request: ChatRequest, deployment: DeploymentConfig, *, compatible: bool = False
) -> dict[str, Any]:
    """The chat-completions body for ``request`` on ``deployment``.

    ``compatible``: bound the output with ``max_tokens`` (what OpenAI-compatible
    servers understand) instead of ``max_completion_tokens``. Streaming always asks for
    usage (``stream_options.include_usage``) so cost is known.
    """
    body = _body(request, deployment, compatible, written=False)
    if request.stream:
        body.update(_STREAM_MEMBERS)
    return body


def _body(
    request: ChatRequest, deployment: DeploymentConfig, compatible: bool, *, written: bool
) -> dict[str, Any]:
    """:func:`build_openai_request` but for the stream members (``written``: see
    :func:`_add_options`)."""
    body: dict[str, Any] = {
        "model": deployment.model,
        "messages": build_openai_messages(request.messages),
    }
    limit = request.max_tokens or deployment.max_output_tokens
    body["max_tokens" if compatible else "max_completion_tokens"] = limit
    _add_options(body, request, written=written)
    return body


def _tools(request: ChatRequest) -> list[dict[str, Any]]:
    tools = []
    for t in request.tools:
        fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
        if t.description:
            fn["description"] = t.description
        if t.strict:
            fn["strict"] = True
        tools.append({"type": "function", "function": fn})
    return tools


def _written_tools(request: ChatRequest) -> Any:
    """The tools as orjson writes them in a body: written once for the requests that
    sent the same tools (``ChatRequest.tool_forms``), else built for this request."""
    forms = request.tool_forms
    if forms is None:
        return _tools(request)
    written = forms.get("openai")
    if written is None:
        tools = _tools(request)
        try:
            written = forms["openai"] = orjson.Fragment(orjson.dumps(tools))
        except TypeError:  # a value orjson refuses: the body's dumps refuses it there
            return tools
    return written


def _add_options(body: dict[str, Any], request: ChatRequest, *, written: bool = False) -> None:
    """The members after the output bound, but for the stream flag. ``written``: the
    tools as an ``orjson.Fragment`` when they were written before (for a body orjson
    writes next, never for a dict a caller reads)."""
    if request.tools:
        body["tools"] = _written_tools(request) if written else _tools(request)
        if request.tool_choice == "function":
            body["tool_choice"] = {
                "type": "function",
                "function": {"name": request.tool_choice_name or ""},
            }
        else:
            body["tool_choice"] = request.tool_choice
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    rf = request.response_format
    if rf.kind == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif rf.kind == "json_schema":
        js: dict[str, Any] = {"name": rf.name, "schema": rf.schema or {}}
        if rf.strict:
            js["strict"] = True
        body["response_format"] = {"type": "json_schema", "json_schema": js}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = request.stop
    if request.seed is not None:
        body["seed"] = request.seed


def openai_body(
    request: ChatRequest,
    deployment: DeploymentConfig,
    *,
    compatible: bool = False,
    stream: bool = False,
) -> bytes:
    """``orjson.dumps`` of :func:`build_openai_request`, streamed (with its usage) or not
    whatever the request said: written by the core when every message is plain text
    (the usual request), else through the dict."""
    # (role, text) of messages build_openai_messages writes as just {"role", "content":
    # text}: one text part, no name, no tool calls, not a tool result. Inline, as a
    # function call costs as much as the loop; the core's reading when it has one.
    messages: Sequence[tuple[str, str]] | None = request.plain_texts
    turn = None
    if messages is None:
        turn = request.turn_messages  # an agent's turn, as the core read it
        if turn is None:
            pairs: list[tuple[str, str]] = []
            messages = pairs
            for m in request.messages:
                parts = m.parts
                if len(parts) != 1 or m.tool_calls or m.name or m.role == "tool":
                    messages = None
                    break
                part = parts[0]
                if type(part) is not TextPart:
                    messages = None
                    break
                pairs.append((m.role, part.text))
    if messages is not None or turn is not None:
        options: dict[str, Any] | None = None
        if (
            request.tools
            or request.response_format.kind != "text"
            or request.temperature is not None
            or request.top_p is not None
            or request.stop
            or request.seed is not None
        ):  # options follow the bound (most requests have none of these)
            options = {}
            _add_options(options, request, written=True)
            if stream:
                options.update(_STREAM_MEMBERS)
        try:
            # A value orjson refuses in the options (a JSONEncodeError is a TypeError):
            # the dict below refuses the body as a whole, naming what comes first in it.
            rest = _STREAM_REST if stream else None
            if options is not None:
                rest = orjson.dumps(options)
            limit_key = "max_tokens" if compatible else "max_completion_tokens"
            limit = request.max_tokens or deployment.max_output_tokens
            if messages is not None:
                return _core.openai_chat_body(deployment.model, messages, limit_key, limit, rest)
            if turn is not None:
                return _core.openai_turn_body(deployment.model, turn, limit_key, limit, rest)
        except (TypeError, ValueError, OverflowError):
            pass  # a value the core cannot take: orjson writes it (or refuses) below
    body = _body(request, deployment, compatible, written=True)
    if stream:
        body.update(_STREAM_MEMBERS)
    return orjson.dumps(body)


def _tool_calls(raw: Any) -> list[ToolCall]:
    if not raw:
        return []
    calls = []
    for c in raw:
        fn = c.get("function") or {}
        args = fn.get("arguments")
        calls.append(
            ToolCall(
                id=c.get("id") or "",
                name=fn.get("name") or "",
                arguments=args if isinstance(args, str) else orjson.dumps(args or {}).decode(),
            )
        )
    return calls


@reads_answer("response")
def parse_openai_response(doc: Any, *, provider: str = "") -> Completion:
    """A chat.completion object → Completion (first choice)."""
    try:
        choice = doc["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise malformed("chat completion (no choices[0].message)", provider) from None
    tool_calls = _tool_calls(message.get("tool_calls"))
    reason: FinishReason = finish_reason(choice.get("finish_reason"))
    if tool_calls and reason == "stop":
        reason = "tool_calls"
    return Completion(
        text=message.get("content"),
        finish_reason=reason,
        usage=usage_openai(doc.get("usage")),
        model=doc.get("model") or "",
        tool_calls=tool_calls,
        refusal=message.get("refusal"),
        provider_response_id=doc.get("id") or "",
    )


def completion_from_body(raw: bytes, provider: str = "") -> Completion:
    """:func:`parse_openai_response` of a response body: read by the core when the body
    has the usual shape (with the OpenAI surface's body written then, ``openai_tail``),
    else by the Python parser (which decides what an odd one is)."""
    fields = _core.read_openai_completion(raw)
    if fields is None:
        return parse_openai_response(json_body(raw, provider), provider=provider)
    (text, reason, input_tokens, output_tokens, cached, reasoning, model, calls, refusal, rid,
     tail) = fields  # fmt: skip
    return Completion(
        text,
        reason,
        Usage(input_tokens, output_tokens, cached, reasoning),
        model,
        [ToolCall(*call) for call in calls] if calls else [],
        refusal,
        rid,
        tail,
    )


def stream_error(err: Any, provider: str = "") -> ProviderError:
    """An ``{"error": ...}`` object sent inside a stream."""
    return in_stream_error(err, ("code", "type"), provider)


class OpenAIStreamParser:
    """chat.completion.chunk SSE data → canonical events; ``[DONE]`` is terminal.

    A body that ends after a chunk carrying ``finish_reason`` and one carrying
    ``usage`` but before ``[DONE]`` still counts as complete (some compatible servers
    omit ``[DONE]``); a body that ends sooner is a cut stream.

    A tool-call delta without an ``index`` (or with a null one), as Gemini's and Ollama's
    compatible streams send them, is placed by :meth:`_place`.
    """

    __slots__ = (
        "_finish",
        "_ids",
        "_last",
        "_model",
        "_next",
        "_refusal",
        "_usage",
        "_usage_seen",
        "done",
        "provider",
    )

    def __init__(self, provider: str = "", model: str = "") -> None:
        self.provider = provider
        self.done = False
        self._finish: str | None = None
        self._model = model
        self._refusal: list[str] = []
        self._usage = Usage()
        self._usage_seen = False
        self._ids: dict[str, int] = {}  # tool-call id -> its index
        self._last: int | None = None  # the index of the last tool-call delta
        self._next = 0  # past the highest index seen

    def _place(self, index: Any, call_id: Any) -> Any:
        """The index of a tool-call delta: the wire's when it gave one, else the call
        its id opened, a new call for an id not seen before, else the call the last
        delta was about (more of its arguments). The core relay's rule
        (``chunk::ToolSlots``)."""
        cid = call_id if type(call_id) is str and call_id else None
        known = None if cid is None else self._ids.get(cid)
        if index is None:
            if cid is not None:
                index = self._next if known is None else known
            else:
                index = self._next if self._last is None else self._last
        if cid is not None and known is None:
            self._ids[cid] = index
        self._last = index
        if type(index) is int and index >= self._next:
            self._next = index + 1
        return index

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = event.data
        if data == "[DONE]":
            return [self._end()]
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed("stream chunk (not JSON)", self.provider) from None
        if not isinstance(chunk, dict):
            raise malformed("stream chunk (not an object)", self.provider)
        if "error" in chunk:
            raise stream_error(chunk["error"], self.provider)
        out: list[StreamEvent] = []
        model = chunk.get("model")
        if model:
            self._model = model
        usage = chunk.get("usage")
        if usage:
            self._usage = usage_openai(usage)
            self._usage_seen = True
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                out.append(TextDelta(text))
            refusal = delta.get("refusal")
            if refusal:
                self._refusal.append(refusal)
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                call_id = tc.get("id")
                if type(call_id) is int:  # a number (some compatible servers): its text
                    call_id = str(call_id)
                out.append(
                    ToolCallDelta(
                        index=self._place(tc.get("index"), call_id),
                        id=call_id,
                        name=fn.get("name"),
                        arguments=fn.get("arguments") or "",
                    )
                )
            reason = choice.get("finish_reason")
            if reason:
                self._finish = reason
        return out

    def finish(self) -> list[StreamEvent]:
        if self._finish is not None and self._usage_seen:
            return [self._end()]
        raise cut_stream(self.provider)

    def _end(self) -> StreamEnd:
        if self._finish is None:
            raise cut_stream(self.provider)  # [DONE] without any finish_reason
        self.done = True
        return StreamEnd(
            finish_reason=finish_reason(self._finish),
            usage=self._usage,
            model=self._model,
            refusal="".join(self._refusal) or None,
        )


class OpenAIAdapter(HttpAdapter):
    """Kinds ``openai`` and ``openai_compatible``: ``POST {base}/chat/completions``."""

    __slots__ = ("_compatible", "_url")

    default_base_url = "https://api.openai.com/v1"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self._compatible = config.kind == "openai_compatible"
        self._url = f"{self.base_url}/chat/completions"

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        body = openai_body(request, deployment, compatible=self._compatible)
        raw = await self._post_raw(self._url, body, timeout_s)
        completion = completion_from_body(raw, self.name)
        if request.response_format.kind != "text":  # the check's own first test, inline
            check_json_completion(completion, request.response_format, self.name)
        return completion

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        body = openai_body(request, deployment, compatible=self._compatible, stream=True)
        return self._stream(
            self._url, body, timeout_s, OpenAIStreamParser(self.name, deployment.model)
        )

    def relay(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[_core.OpenAIRelay]:
        """:meth:`stream`'s call, its body parsed and rendered as the caller's frames
        (either surface's) by the core (``providers/relay.py``)."""
        body = openai_body(request, deployment, compatible=self._compatible, stream=True)
        return RelayStream(self, self._url, body, timeout_s, _core.OpenAIRelay(deployment.model))
