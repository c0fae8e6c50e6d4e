"""Amazon Bedrock Converse and ConverseStream through aiobotocore.

Translation choices:

- system messages go to ``system``; same-role neighbours merge into one turn (Converse
  insists on alternation), so consecutive tool results are one user turn of
  ``toolResult`` blocks;
- images travel as bytes (decoded from data URLs); Bedrock fetches no URLs, so an
  image given by URL is refused (bad_request);
- ``tool_choice`` none has no Converse equivalent: the tools are left out, unless the
  conversation already holds tool blocks (Converse then needs ``toolConfig``), in which
  case the tools are sent without a choice;
- ``json_schema`` answers are forced through a synthetic tool, as for Anthropic;
  ``json_object`` by instruction;
- ``seed`` has no equivalent and is dropped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from tiergate.config import DeploymentConfig
from tiergate.envelope import ChatRequest, ImagePart, Message, TextPart, ToolCall
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers._aws import AwsAdapter
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
    SHAPE_ERRORS,
    args_to_json,
    args_to_object,
    check_json_completion,
    cut_stream,
    extract_json_text,
    finish_reason,
    json_tool_answer,
    json_tool_name,
    json_tool_schema,
    malformed,
    reads_answer,
    unwrap_answer,
    usage_bedrock,
)

__all__ = [
    "BedrockAdapter",
    "BedrockStreamParser",
    "build_converse_request",
    "parse_converse_response",
]

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data_b64 is None:
        raise ProviderError(
            ErrorClass.BAD_REQUEST, "bedrock takes images as data URLs only (no URL fetching)"
        )
    fmt = _IMAGE_FORMATS.get(part.media_type or "")
    if fmt is None:
        raise ProviderError(
            ErrorClass.BAD_REQUEST, f"bedrock does not take images of type {part.media_type}"
        )
    try:
        data = base64.b64decode(part.data_b64, validate=False)
    except (binascii.Error, ValueError):
        raise ProviderError(ErrorClass.BAD_REQUEST, "image data is not base64") from None
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _blocks(msg: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"text": p.text})
        else:
            out.append(_image(p))
    return out


def build_converse_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], bool]:
    """Canonical turns → Converse turns, and whether any tool block was written."""
    out: list[dict[str, Any]] = []
    has_tool_blocks = False
    for msg in messages:
        role = msg.role
        if role == "system":
            continue
        blocks: list[dict[str, Any]]
        if role == "tool":
            blocks = [
                {
                    "toolResult": {
                        "toolUseId": msg.tool_call_id or "",
                        "content": [{"text": msg.text or " "}],
                    }
                }
            ]
            role = "user"
            has_tool_blocks = True
        elif role == "assistant":
            blocks = _blocks(msg)
            for c in msg.tool_calls:
                blocks.append(
                    {
                        "toolUse": {
                            "toolUseId": c.id,
                            "name": c.name,
                            "input": args_to_object(c.arguments),
                        }
                    }
                )
                has_tool_blocks = True
        else:
            blocks = _blocks(msg)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out, has_tool_blocks


def build_converse_request(request: ChatRequest, deployment: DeploymentConfig) -> dict[str, Any]:
    """Keyword arguments of ``converse`` / ``converse_stream``."""
    messages, has_tool_blocks = build_converse_messages(request.messages)
    params: dict[str, Any] = {"modelId": deployment.model, "messages": messages}
    system = request.system_text
    rf = request.response_format
    if rf.kind == "json_object":
        system = f"{system}\n\n{JSON_OBJECT_INSTRUCTION}" if system else JSON_OBJECT_INSTRUCTION
    if system:
        params["system"] = [{"text": system}]
    inference: dict[str, Any] = {"maxTokens": request.max_tokens or deployment.max_output_tokens}
    if request.temperature is not None:
        inference["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = request.stop
    params["inferenceConfig"] = inference
    tools = [
        {
            "toolSpec": {
                "name": t.name,
                "description": t.description or t.name,
                "inputSchema": {"json": t.parameters},
            }
        }
        for t in request.tools
    ]
    mode = request.tool_choice
    choice: dict[str, Any] | None = None
    if mode == "required":
        choice = {"any": {}}
    elif mode == "function":
        choice = {"tool": {"name": request.tool_choice_name or ""}}
    elif mode == "none" and not has_tool_blocks:
        tools = []
    json_tool = json_tool_name(request)
    if json_tool is not None:
        spec = {
            "toolSpec": {
                "name": json_tool,
                "description": "Give the final answer as this tool's input.",
                "inputSchema": {"json": json_tool_schema(rf.schema or {})},
            }
        }
        if mode == "none" or not tools:
            tools = [spec]
            choice = {"tool": {"name": json_tool}}
        else:
            tools.append(spec)
            if mode != "function":
                choice = {"any": {}}
    if tools:
        config: dict[str, Any] = {"tools": tools}
        if choice is not None:
            config["toolChoice"] = choice
        params["toolConfig"] = config
    return params


@reads_answer("response")
def parse_converse_response(
    doc: Any,
    *,
    model: str = "",
    json_tool: str | None = None,
    schema: dict[str, Any] | None = None,
    provider: str = "",
) -> Completion:
    try:
        content = doc["output"]["message"]["content"]
    except (KeyError, TypeError):
        raise malformed("Converse response (no output.message)", provider) from None
    texts: list[str] = []
    calls: list[ToolCall] = []
    answer: str | None = None
    for block in content:
        if "text" in block:
            texts.append(block["text"])
        tool = block.get("toolUse")
        if isinstance(tool, dict):
            if json_tool is not None and tool.get("name") == json_tool:
                answer = json_tool_answer(schema, tool.get("input"))
            else:
                calls.append(
                    ToolCall(
                        id=tool.get("toolUseId") or "",
                        name=tool.get("name") or "",
                        arguments=args_to_json(tool.get("input")),
                    )
                )
    reason: FinishReason = finish_reason(doc.get("stopReason"))
    if answer is not None and not calls:
        text: str | None = answer
        if reason == "tool_calls":
            reason = "stop"
    else:
        text = "".join(texts) if texts else None
    meta = doc.get("ResponseMetadata") or {}
    return Completion(
        text=text,
        finish_reason=reason,
        usage=usage_bedrock(doc.get("usage")),
        model=model,
        tool_calls=calls,
        provider_response_id=meta.get("RequestId") or "",
    )


class BedrockStreamParser:
    """ConverseStream events → canonical events.

    ``messageStop`` carries the stop reason, ``metadata`` (after it) the usage; the
    stream is done at ``metadata``, or at the end of the body after ``messageStop``.
    """

    __slots__ = (
        "_argued",
        "_blocks",
        "_calls",
        "_held",
        "_json_tool",
        "_model",
        "_stop",
        "_unwrap",
        "_usage",
        "done",
        "provider",
    )

    def __init__(
        self,
        provider: str = "",
        model: str = "",
        json_tool: str | None = None,
        *,
        unwrap: bool = False,
    ) -> None:
        self.provider = provider
        self._unwrap = unwrap  # the answer schema was wrapped as {"value": ...}
        self._held: list[str] = []
        self.done = False
        self._model = model
        self._json_tool = json_tool
        self._blocks: dict[int, int] = {}  # block index -> tool ordinal (-1: JSON answer)
        self._calls = 0
        self._argued: set[int] = set()  # tool ordinals given some input
        self._stop: str | None = None
        self._usage = Usage()

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta")
            if not isinstance(delta, dict):
                # botocore turns an undecodable payload into an event without members
                raise malformed(
                    "ConverseStream event (contentBlockDelta without delta)", self.provider
                )
            index = body.get("contentBlockIndex", 0)
            text = delta.get("text")
            if text:
                if self._json_tool is not None:
                    return []
                return [TextDelta(text)]
            tool = delta.get("toolUse")
            if isinstance(tool, dict):
                part = tool.get("input") or ""
                ordinal = self._blocks.get(index)
                if ordinal is None or not part:
                    return []
                if ordinal < 0:
                    if self._unwrap:
                        self._held.append(part)
                        return []
                    return [TextDelta(part)]
                self._argued.add(ordinal)
                return [ToolCallDelta(index=ordinal, arguments=part)]
            return []
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            tool = (body.get("start") or {}).get("toolUse")
            if isinstance(tool, dict):
                index = body.get("contentBlockIndex", 0)
                name = tool.get("name") or ""
                if self._json_tool is not None and name == self._json_tool:
                    self._blocks[index] = -1
                    return []
                ordinal = self._calls
                self._calls += 1
                self._blocks[index] = ordinal
                return [ToolCallDelta(index=ordinal, id=tool.get("toolUseId") or "", name=name)]
            return []
        if "contentBlockStop" in event:
            index = event["contentBlockStop"].get("contentBlockIndex", 0)
            ordinal = self._blocks.get(index)
            if ordinal == -1 and self._unwrap:
                return [TextDelta(unwrap_answer("".join(self._held), self.provider))]
            if ordinal is not None and ordinal >= 0 and ordinal not in self._argued:
                # A tool without parameters streams no input: its arguments are the
                # empty object, as OpenAI sends them, never the empty string.
                return [ToolCallDelta(index=ordinal, arguments="{}")]
            return []
        if "messageStop" in event:
            stop = event["messageStop"].get("stopReason")
            if not stop:
                raise malformed(
                    "ConverseStream event (messageStop without stopReason)", self.provider
                )
            self._stop = stop
            return []
        if "metadata" in event:
            usage = event["metadata"].get("usage")
            if not isinstance(usage, dict):
                raise malformed("ConverseStream event (metadata without usage)", self.provider)
            self._usage = usage_bedrock(usage)
            if self._stop is not None:
                return [self._end()]
            return []
        return []  # messageStart, unknown future events

    def finish(self) -> list[StreamEvent]:
        if self._stop is None:
            raise cut_stream(self.provider)
        return [self._end()]

    def _end(self) -> StreamEnd:
        self.done = True
        reason = finish_reason(self._stop)
        if reason == "tool_calls" and self._calls == 0:
            reason = "stop"
        return StreamEnd(finish_reason=reason, usage=self._usage, model=self._model)


class BedrockAdapter(AwsAdapter):
    """``bedrock-runtime`` Converse / ConverseStream."""

    __slots__ = ()

    service = "bedrock-runtime"

    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        params = build_converse_request(request, deployment)
        doc = await self._call("converse", params, timeout_s)
        rf = request.response_format
        completion = parse_converse_response(
            doc,
            model=deployment.model,
            json_tool=json_tool_name(request),
            schema=rf.schema,
            provider=self.name,
        )
        if rf.kind == "json_object" and completion.text is not None:
            completion.text = extract_json_text(completion.text)
        check_json_completion(completion, rf, self.name)
        return completion

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        params = build_converse_request(request, deployment)
        schema = request.response_format.schema
        parser = BedrockStreamParser(
            self.name,
            deployment.model,
            json_tool_name(request),
            unwrap=schema is not None and schema.get("type") != "object",
        )

        async def translate(stream: Any) -> AsyncGenerator[StreamEvent, None]:
            async for event in stream:
                try:
                    outs = parser.feed(event)
                except SHAPE_ERRORS:
                    raise malformed("stream event", self.name) from None
                for out in outs:
                    yield out
                if parser.done:
                    return
            for out in parser.finish():
                yield out

        return self._stream("converse_stream", params, "stream", timeout_s, translate)
