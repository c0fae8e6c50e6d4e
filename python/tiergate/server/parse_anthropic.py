"""Anthropic Messages body → :class:`~tiergate.envelope.ChatRequest`.

``tool_result`` blocks in a user turn become canonical ``tool`` messages (one per
result, in order) followed by whatever text the turn also carries; ``tool_use`` blocks
become the assistant's tool calls with their ``input`` as JSON text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from tiergate import _core
from tiergate.envelope import (
    MADE_LATER,
    TEXT_FORMAT,
    ChatRequest,
    ImagePart,
    Message,
    Part,
    PlainChatRequest,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolSet,
)
from tiergate.errors import RequestError
from tiergate.server.toolsets import ToolSets
from tiergate.server.turns import turn_request
from tiergate.server.validate import (
    bad,
    check_schema,
    check_tool_name,
    opt_bool,
    opt_int,
    opt_number,
    req_str,
    stop_list,
)

if TYPE_CHECKING:
    from tiergate.routing.planner import Known

__all__ = ["ingest_plain_anthropic_request", "parse_anthropic_request"]


def ingest_plain_anthropic_request(
    raw: bytes, scope: str | None
) -> tuple[ChatRequest, bytes | None, Known] | None:
    """The usual body (a model, an output bound, a system prompt, turns of text as a
    string or text blocks, the sampling options, the stream flag), or an agent's turn
    (tools, a tool choice, ``tool_use`` and ``tool_result`` blocks), taken in by the core
    in one call: the request as :func:`parse_anthropic_request` reads it, its idempotency
    key under ``scope`` (see ``Idempotency.scope``; None without a scope) and what the
    planner would compute of it (``Known``). None for any other body, which that function
    then reads (and refuses, when it must)."""
    fields = _core.ingest_anthropic_request(raw, scope)
    if fields is None:
        return None
    (model, texts, sizes, max_tokens, temperature, top_p, stop, stream, key, prompt_tokens,
     caps, turn) = fields  # fmt: skip
    if turn is not None:
        return _ingest_turn(
            raw, model, max_tokens, temperature, top_p, stop, stream, key, prompt_tokens, caps, turn
        )
    plain: tuple[list[Message], Sequence[tuple[str, str]]] | None = None
    kind = ChatRequest
    if sizes is None:
        # Every message one text: the core's reading is the messages (ChatRequest.plain),
        # from which the OpenAI adapter writes the provider's body in the core; they are
        # made on first use (PlainChatRequest).
        kind = PlainChatRequest
        messages = MADE_LATER
        plain = (MADE_LATER, texts)
    else:
        messages = []
        at = 0
        for size in sizes:
            end = at + size
            parts: list[Part] = [TextPart(text) for _, text in texts[at:end]]
            messages.append(Message(texts[at][0], parts, []))
            at = end
    # Every field by position, defaults spelled out (see ingest_plain_openai_request).
    chat = kind(
        model,
        messages,
        [],  # tools
        "auto",  # tool_choice
        None,  # tool_choice_name
        True,  # parallel_tool_calls
        TEXT_FORMAT,
        max_tokens,
        temperature,
        top_p,
        stop,
        None,  # seed
        stream,
        True,  # include_usage
        raw,
        plain,
    )
    return chat, key, (caps, prompt_tokens)


def _ingest_turn(
    raw: bytes,
    model: str,
    max_tokens: int,
    temperature: float | None,
    top_p: float | None,
    stop: list[str],
    stream: bool,
    key: bytes | None,
    prompt_tokens: int,
    caps: int,
    turn: Any,
) -> tuple[ChatRequest, bytes | None, Known] | None:
    """:func:`ingest_plain_anthropic_request` of an agent's turn: the core read the
    messages and found the values of ``tools`` and ``tool_choice``, read here (the tools
    from :data:`TOOLSETS` when their bytes were seen lately). None when one is a value
    :func:`parse_anthropic_request` refuses: it reads the body again and names the
    field."""
    messages, tools_at, choice_at = turn
    toolset = None
    tools: list[Tool] = []
    if tools_at is not None:
        toolset = TOOLSETS.get(raw[tools_at[0] : tools_at[1]])
        if toolset is None:
            return None
        tools = toolset.tools
        if not tools:
            toolset = None  # as the parser reads an empty array: no tools, no toolset
    choice = None
    try:
        if choice_at is not None:
            choice = orjson.loads(raw[choice_at[0] : choice_at[1]])
        tool_choice, tool_choice_name, parallel = _tool_choice(choice, tools)
    except (RequestError, orjson.JSONDecodeError):
        return None
    # Every field by position, defaults spelled out (see ingest_plain_openai_request).
    return turn_request(
        model,
        messages,
        tools,
        tool_choice,
        tool_choice_name,
        parallel,
        TEXT_FORMAT,
        max_tokens,
        temperature,
        top_p,
        stop,
        None,  # seed
        stream,
        True,  # include_usage
        raw,
        toolset,
        key,
        prompt_tokens,
        caps,
    )


def parse_anthropic_request(body: Any, raw: bytes = b"") -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = req_str(body, "model", "model")
    max_tokens = opt_int(body, "max_tokens", "max_tokens", minimum=1)
    if max_tokens is None:
        raise RequestError("missing required parameter: `max_tokens`", param="max_tokens")
    messages = _system(body.get("system"))
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise RequestError("missing required parameter: `messages`", param="messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        bad("messages", "must be a non-empty array of messages")
    for i, m in enumerate(raw_messages):
        messages.extend(_message(m, f"messages.{i}"))
    raw_tools = body.get("tools")
    toolset = _toolset(raw_tools) if raw_tools else None
    tools = toolset.tools if toolset is not None else _tools(raw_tools)
    tool_choice, name, parallel = _tool_choice(body.get("tool_choice"), tools)
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        tool_choice_name=name,
        parallel_tool_calls=parallel,
        response_format=_output_format(body),
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", "temperature", 0.0, 1.0),
        top_p=opt_number(body, "top_p", "top_p", 0.0, 1.0),
        stop=stop_list(body.get("stop_sequences"), "stop_sequences", limit=16),
        stream=opt_bool(body, "stream", "stream") or False,
        include_usage=True,
        raw=raw,
        toolset=toolset,
    )


def _toolset(value: Any) -> ToolSet | None:
    """The tools of a ``tools`` value from :data:`TOOLSETS`, by the bytes ``orjson``
    writes of it (an agent sends its tools again with every turn: read and checked once);
    None when they are to be read afresh: refused (the fresh read names the field), or
    not written (an integer past 64 bits)."""
    try:
        src = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None
    return TOOLSETS.get(src)


def _system(value: Any) -> list[Message]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Message("system", [TextPart(value)])] if value else []
    if not isinstance(value, list):
        bad("system", "must be a string or an array of text blocks")
    parts: list[Part] = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            bad(f"system.{i}", "must be a text block")
        text = block.get("text")
        if not isinstance(text, str):
            bad(f"system.{i}.text", "must be a string")
        parts.append(TextPart(text))
    return [Message("system", parts)] if parts else []


def _message(m: Any, path: str) -> list[Message]:
    if not isinstance(m, dict):
        bad(path, "must be an object")
    role = m.get("role")
    if role not in ("user", "assistant"):
        bad(f"{path}.role", f"must be 'user' or 'assistant'; got {role!r}")
    content = m.get("content")
    if isinstance(content, str):
        if not content:
            bad(f"{path}.content", "must not be empty")
        return [Message(role, [TextPart(content)])]
    if not isinstance(content, list):
        bad(f"{path}.content", "must be a string or an array of content blocks")
    if not content:
        bad(f"{path}.content", "must not be empty")
    out: list[Message] = []
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        bpath = f"{path}.content.{j}"
        if not isinstance(block, dict):
            bad(bpath, "must be an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                bad(f"{bpath}.text", "must be a string")
            parts.append(TextPart(text))
        elif kind == "image" and role == "user":
            parts.append(_image(block.get("source"), f"{bpath}.source"))
        elif kind == "tool_use" and role == "assistant":
            call_id = block.get("id")
            if not isinstance(call_id, str) or not call_id:
                bad(f"{bpath}.id", "must be a non-empty string")
            name = check_tool_name(block.get("name"), f"{bpath}.name")
            args = block.get("input", {})
            if not isinstance(args, dict):
                bad(f"{bpath}.input", "must be an object")
            calls.append(ToolCall(call_id, name, orjson.dumps(args).decode()))
        elif kind == "tool_result" and role == "user":
            out.append(_tool_result(block, bpath))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # not forwarded: other providers cannot take them
        else:
            bad(f"{bpath}.type", f"unsupported content block type {kind!r} in a {role} turn")
    if role == "assistant":
        if not calls and not any(isinstance(p, TextPart) and p.text for p in parts):
            bad(f"{path}.content", "must not be empty")
        return [Message("assistant", parts, tool_calls=calls)]
    if parts:
        out.append(Message("user", parts))
    return out


def _tool_result(block: dict[str, Any], path: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        bad(f"{path}.tool_use_id", "must be a non-empty string")
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            if not isinstance(inner, dict) or inner.get("type") != "text":
                bad(f"{path}.content.{k}", "only text blocks are supported in tool results")
            value = inner.get("text")
            if not isinstance(value, str):
                bad(f"{path}.content.{k}.text", "must be a string")
            texts.append(value)
        text = "\n".join(texts)
    else:
        bad(f"{path}.content", "must be a string or an array of text blocks")
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return Message("tool", [TextPart(text)] if text else [], tool_call_id=call_id)


def _image(source: Any, path: str) -> ImagePart:
    if not isinstance(source, dict):
        bad(path, "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if not isinstance(media_type, str) or not media_type.startswith("image/"):
            bad(f"{path}.media_type", "must be an image media type")
        if not isinstance(data, str) or not data:
            bad(f"{path}.data", "must be a non-empty base64 string")
        return ImagePart(f"data:{media_type};base64,{data}", media_type, data)
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            bad(f"{path}.url", "must be an http(s) URL")
        return ImagePart(url)
    bad(f"{path}.type", f"must be 'base64' or 'url'; got {kind!r}")


def _output_format(body: dict[str, Any]) -> ResponseFormat:
    """Structured output: ``output_config.format`` (or the older ``output_format``)."""
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, dict):
            bad("output_config", "must be an object")
        spec, path = config.get("format"), "output_config.format"
    else:
        spec, path = body.get("output_format"), "output_format"
    if spec is None:
        return TEXT_FORMAT
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        bad(f"{path}.type", "must be 'json_schema'")
    schema = spec.get("schema")
    if schema is None:
        bad(f"{path}.schema", "is required and must be a JSON Schema object")
    return ResponseFormat("json_schema", check_schema(schema, f"{path}.schema"), "response", True)


def _tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        bad("tools", "must be an array")
    tools = []
    for i, t in enumerate(value):
        path = f"tools.{i}"
        if not isinstance(t, dict):
            bad(path, "must be an object")
        if t.get("type") not in (None, "custom"):
            bad(f"{path}.type", f"server tools are not supported: {t.get('type')!r}")
        name = check_tool_name(t.get("name"), f"{path}.name")
        schema = t.get("input_schema")
        if schema is None:
            bad(f"{path}.input_schema", "is required and must be a JSON Schema object")
        check_schema(schema, f"{path}.input_schema")
        desc = t.get("description", "")
        if not isinstance(desc, str):
            bad(f"{path}.description", "must be a string")
        tools.append(Tool(name, desc, schema))
    return tools


def _tool_choice(value: Any, tools: list[Tool]) -> tuple[Any, str | None, bool]:
    if value is None:
        return "auto", None, True
    if not isinstance(value, dict):
        bad("tool_choice", "must be an object")
    parallel = not bool(value.get("disable_parallel_tool_use", False))
    kind = value.get("type")
    if kind == "auto":
        return "auto", None, parallel
    if kind == "none":
        return "none", None, parallel
    if kind == "any":
        if not tools:
            bad("tool_choice", "'any' needs at least one tool in `tools`")
        return "required", None, parallel
    if kind == "tool":
        name = value.get("name")
        # (a name of another type, unhashable say, names no tool: not a TypeError)
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            bad("tool_choice.name", f"names no tool in `tools`: {name!r}")
        return "function", name, parallel
    bad("tool_choice.type", f"must be 'auto', 'any', 'tool' or 'none'; got {kind!r}")


# The tools read lately (per process: requests run on the event loop's thread).
TOOLSETS = ToolSets(_tools)
