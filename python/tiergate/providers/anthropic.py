"""Anthropic Messages API (``POST {base}/v1/messages``).

Translation choices:

- system messages join into the one ``system`` slot; consecutive tool results become
  one user turn of ``tool_result`` blocks (Anthropic wants alternating turns);
- ``max_tokens`` is required: the request's, else the deployment's bound;
- ``temperature`` is clamped to Anthropic's 0-1 range; ``seed`` has no equivalent;
- ``json_schema`` answers are forced through a synthetic tool whose ``input_schema`` is
  the schema; its input becomes the answer text (finish reason ``stop``);
- ``json_object`` is asked for by instruction; non-streaming answers are unwrapped from
  Markdown fences before validation.
"""

from __future__ import annotations

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
    JSON_OBJECT_INSTRUCTION,
    SSEEvent,
    args_to_json,
    args_to_object,
    check_json_completion,
    cut_stream,
    extract_json_text,
    finish_reason,
    in_stream_error,
    json_tool_answer,
    json_tool_name,
    json_tool_schema,
    malformed,
    reads_answer,
    unwrap_answer,
    usage_anthropic,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "AnthropicAdapter",
    "AnthropicStreamParser",
    "build_anthropic_request",
    "parse_anthropic_response",
]

ANTHROPIC_VERSION = "2023-06-01"


def _blocks(msg: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            if p.data_b64 is not None:
                source = {
                    "type": "base64",
                    "media_type": p.media_type or "image/png",
                    "data": p.data_b64,
                }
            else:
                source = {"type": "url", "url": p.url}
            out.append({"type": "image", "source": source})
    return out


def build_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Canonical turns → Anthropic turns; same-role neighbours are merged."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.role
        if role == "system":
            continue
        if role == "tool":
            blocks: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.text}
            ]
            role = "user"
        elif role == "assistant":
            blocks = _blocks(msg)
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": c.id,
                    "name": c.name,
                    "input": args_to_object(c.arguments),
                }
                for c in msg.tool_calls
            )
        else:
            blocks = _blocks(msg)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def build_anthropic_request(request: ChatRequest, deployment: DeploymentConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": deployment.model,
        "max_tokens": request.max_tokens or deployment.max_output_tokens,
        "messages": build_anthropic_messages(request.messages),
    }
    system = request.system_text
    rf = request.response_format
    if rf.kind == "json_object":
        system = f"{system}\n\n{JSON_OBJECT_INSTRUCTION}" if system else JSON_OBJECT_INSTRUCTION
    if system:
        body["system"] = system
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    tools: list[dict[str, Any]] = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        for t in request.tools
    ]
    choice: dict[str, Any] | None
    mode = request.tool_choice
    if mode == "none":
        choice = {"type": "none"} if tools else None
    elif mode == "required":
        choice = {"type": "any"}
    elif mode == "function":
        choice = {"type": "tool", "name": request.tool_choice_name or ""}
    else:
        choice = {"type": "auto"} if tools else None
    json_tool = json_tool_name(request)
    if json_tool is not None:
        tools.append(
            {
                "name": json_tool,
                "description": "Give the final answer as this tool's input.",
                "input_schema": json_tool_schema(rf.schema or {}),
            }
        )
        if mode == "none" or len(tools) == 1:
            tools = tools[-1:]
            choice = {"type": "tool", "name": json_tool}
        elif mode != "function":
            choice = {"type": "any"}
    if tools:
        body["tools"] = tools
        if choice is not None:
            if not request.parallel_tool_calls and choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
    if request.stream:
        body["stream"] = True
    return body


@reads_answer("response")
def parse_anthropic_response(
    doc: Any,
    *,
    json_tool: str | None = None,
    schema: dict[str, Any] | None = None,
    provider: str = "",
) -> Completion:
    """A Messages API response → Completion. ``json_tool``: the synthetic answer tool."""
    if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
        raise malformed("message (no content)", provider)
    texts: list[str] = []
    calls: list[ToolCall] = []
    answer: str | None = None
    for block in doc["content"]:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if json_tool is not None and block.get("name") == json_tool:
                answer = json_tool_answer(schema, block.get("input"))
            else:
                calls.append(
                    ToolCall(
                        id=block.get("id") or "",
                        name=block.get("name") or "",
                        arguments=args_to_json(block.get("input")),
                    )
                )
    stop = doc.get("stop_reason")
    reason: FinishReason = finish_reason(stop)
    if answer is not None and not calls:
        text: str | None = answer
        reason = "stop" if reason == "tool_calls" else reason
    else:
        text = "".join(texts) if texts else None
    refusal = None
    if stop == "refusal":
        refusal = text or "refused"
        text = None
    return Completion(
        text=text,
        finish_reason=reason,
        usage=usage_anthropic(doc.get("usage")),
        model=doc.get("model") or "",
        tool_calls=calls,
        refusal=refusal,
        provider_response_id=doc.get("id") or "",
    )


def stream_error(data: Any, provider: str = "") -> ProviderError:
    """An ``event: error`` sent inside a stream."""
    err = data.get("error") if isinstance(data, dict) else None
    return in_stream_error(err, ("type",), provider)


class AnthropicStreamParser:
    """Messages SSE → canonical events. ``message_stop`` is terminal.

    Tool calls are numbered by their order among tool_use blocks (not by block index);
    with a synthetic JSON tool its input deltas become text and text blocks are dropped.
    """

    __slots__ = (
        "_argued",
        "_blocks",
        "_calls",
        "_held",
        "_json_tool",
        "_model",
        "_started",
        "_stop",
        "_unwrap",
        "_usage",
        "done",
        "provider",
    )

    # block kinds
    _TEXT, _TOOL, _JSON, _OTHER = 0, 1, 2, 3

    def __init__(
        self,
        provider: str = "",
        model: str = "",
        json_tool: str | None = None,
        unwrap: bool = False,
    ) -> None:
        self.provider = provider
        self.done = False
        self._json_tool = json_tool
        self._unwrap = unwrap  # the answer schema was wrapped as {"value": ...}
        self._held: list[str] = []
        self._model = model
        self._usage = Usage()
        self._blocks: dict[int, tuple[int, int]] = {}  # block index -> (kind, tool ordinal)
        self._calls = 0
        self._argued: set[int] = set()  # tool ordinals given some input
        self._stop: str | None = None
        self._started = False

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        kind = event.event
        if kind == "ping":
            return []
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise malformed("stream event (not JSON)", self.provider) from None
        if not isinstance(data, dict):
            raise malformed("stream event (not an object)", self.provider)
        if kind == "message":  # no `event:` line: the type is in the data
            kind = data.get("type", "")
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._start(data)
        if kind == "message_start":
            msg = data.get("message") or {}
            self._started = True
            self._model = msg.get("model") or self._model
            usage_anthropic(msg.get("usage"), into=self._usage)
            return []
        if kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = delta["stop_reason"]
            usage_anthropic(data.get("usage"), into=self._usage)
            return []
        if kind == "content_block_stop":
            block = self._blocks.get(data.get("index", 0))
            if self._unwrap and block is not None and block[0] == self._JSON:
                return [TextDelta(unwrap_answer("".join(self._held), self.provider))]
            if block is not None and block[0] == self._TOOL and block[1] not in self._argued:
                # A tool without parameters streams no input (or only ""): its arguments
                # are the empty object, as OpenAI sends them, never the empty string.
                return [ToolCallDelta(index=block[1], arguments="{}")]
            return []
        if kind == "message_stop":
            return [self._end()]
        if kind == "error":
            raise stream_error(data, self.provider)
        return []  # unknown future events

    def _start(self, data: dict[str, Any]) -> list[StreamEvent]:
        index = data.get("index", 0)
        block = data.get("content_block") or {}
        btype = block.get("type")
        if btype == "text":
            self._blocks[index] = (self._TEXT, -1)
            text = block.get("text")
            return self._text(text) if text else []
        if btype == "tool_use":
            name = block.get("name") or ""
            if self._json_tool is not None and name == self._json_tool:
                self._blocks[index] = (self._JSON, -1)
                return []
            ordinal = self._calls
            self._calls += 1
            self._blocks[index] = (self._TOOL, ordinal)
            return [ToolCallDelta(index=ordinal, id=block.get("id") or "", name=name)]
        self._blocks[index] = (self._OTHER, -1)
        return []

    def _text(self, text: str) -> list[StreamEvent]:
        if self._json_tool is not None:
            return []
        return [TextDelta(text)]

    def _delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        kind, ordinal = self._blocks.get(data.get("index", 0), (self._OTHER, -1))
        delta = data.get("delta") or {}
        dtype = delta.get("type")
        if dtype == "text_delta":
            text = delta.get("text") or ""
            if kind == self._TEXT and text:
                return self._text(text)
            return []
        if dtype == "input_json_delta":
            part = delta.get("partial_json") or ""
            if not part:
                return []
            if kind == self._TOOL:
                self._argued.add(ordinal)
                return [ToolCallDelta(index=ordinal, arguments=part)]
            if kind == self._JSON:
                if self._unwrap:
                    self._held.append(part)
                    return []
                return [TextDelta(part)]
        return []  # thinking, signature, citations

    def finish(self) -> list[StreamEvent]:
        raise cut_stream(self.provider)

    def _end(self) -> StreamEnd:
        if not self._started:
            raise malformed("stream (message_stop before message_start)", self.provider)
        self.done = True
        reason = finish_reason(self._stop)
        if reason == "tool_calls" and self._calls == 0:
            reason = "stop"  # only the synthetic answer tool was called
        return StreamEnd(
            finish_reason=reason,
            usage=self._usage,
            model=self._model,
            # the refusal's wording was already streamed as text
            refusal="refused" if self._stop == "refusal" else None,
        )


class AnthropicAdapter(HttpAdapter):
    """``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version``."""

    __slots__ = ("_url",)

    default_base_url = "https://api.anthropic.com"

    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        base = self.base_url
        self._url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        body = build_anthropic_request(request, deployment)
        body.pop("stream", None)
        doc = await self._post_json(self._url, body, timeout_s)
        rf = request.response_format
        completion = parse_anthropic_response(
            doc, json_tool=json_tool_name(request), schema=rf.schema, provider=self.name
        )
        if rf.kind == "json_object" and completion.text is not None:
            completion.text = extract_json_text(completion.text)
        check_json_completion(completion, rf, self.name)
        return completion

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        body = build_anthropic_request(request, deployment)
        body["stream"] = True
        schema = request.response_format.schema
        parser = AnthropicStreamParser(
            self.name,
            deployment.model,
            json_tool=json_tool_name(request),
            unwrap=schema is not None and schema.get("type") != "object",
        )
        return self._stream(self._url, body, timeout_s, parser)
