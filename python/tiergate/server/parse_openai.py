"""OpenAI chat-completions body → :class:`~tiergate.envelope.ChatRequest`.

Every rejection is a :class:`~tiergate.errors.RequestError` whose ``param`` names the
field the way OpenAI does (``messages[2].content[0].type``). Fields that do not change
the answer and that we do not forward (``user``, ``metadata``, ``store``, …) are
accepted and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

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
    Role,
    TextPart,
    Tool,
    ToolCall,
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
    parse_data_url,
    req_str,
    stop_list,
)

if TYPE_CHECKING:
    from tiergate.routing.planner import Known

__all__ = ["ingest_plain_openai_request", "parse_openai_request"]

_ROLES = ("system", "developer", "user", "assistant", "tool")


def ingest_plain_openai_request(
    raw: bytes, scope: str | None
) -> tuple[ChatRequest, bytes | None, Known] | None:
    """The usual body (a model, plain-text messages, an output bound, the stream flag,
    the sampling options) taken in by the core in one call: the request as
    :func:`parse_openai_request` reads it, its idempotency key under ``scope`` (see
    ``Idempotency.scope``; None without a scope) and what the planner would compute of
    it (``Known``). None for any other body, which that function then reads (and
    refuses, when it must)."""
    fields = _core.ingest_chat_request(raw, scope)
    if fields is None:
        return None
    model, messages, max_tokens, stream, key, prompt_tokens, required_caps, turn, sampling = fields
    if turn is not None:
        return _ingest_turn(
            raw, model, max_tokens, stream, key, prompt_tokens, required_caps, turn, sampling
        )
    temperature, top_p, stop, seed, include_usage = sampling
    # Every field by position, defaults spelled out: keywords and default factories cost
    # a third more on every request that takes this path (ChatRequest 7.0k -> 5.0k). The
    # messages are made on first use from the pairs (see PlainChatRequest).
    chat = PlainChatRequest(
        model,
        MADE_LATER,
        [],  # tools
        "auto",  # tool_choice
        None,  # tool_choice_name
        True,  # parallel_tool_calls
        TEXT_FORMAT,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
        stream,
        include_usage,
        raw,
        (MADE_LATER, messages),
    )
    return chat, key, (required_caps, prompt_tokens)


def _ingest_turn(
    raw: bytes,
    model: str,
    max_tokens: int | None,
    stream: bool,
    key: bytes | None,
    prompt_tokens: int,
    caps: int,
    turn: Any,
    sampling: tuple[float | None, float | None, list[str], int | None, bool],
) -> tuple[ChatRequest, bytes | None, Known] | None:
    """:func:`ingest_plain_openai_request` of an agent's turn: the core read the messages
    and the sampling options, and found the values of ``tools``, ``tool_choice`` and
    ``response_format``, read here (the tools from :data:`TOOLSETS` when their bytes were
    seen lately). None when one is a value :func:`parse_openai_request` refuses: it reads
    the body again and names the field."""
    messages, tools_at, choice_at, parallel, format_at = turn
    toolset = None
    tools: list[Tool] = []
    if tools_at is not None:
        toolset = TOOLSETS.get(raw[tools_at[0] : tools_at[1]])
        if toolset is None:
            return None
        tools = toolset.tools
    tool_choice: Any = "auto"
    tool_choice_name = None
    if choice_at is not None:
        try:
            tool_choice, tool_choice_name = _tool_choice(
                orjson.loads(raw[choice_at[0] : choice_at[1]]), tools
            )
        except (RequestError, orjson.JSONDecodeError):
            return None
    response_format = TEXT_FORMAT
    if format_at is not None:
        try:
            response_format = _response_format(orjson.loads(raw[format_at[0] : format_at[1]]))
        except (RequestError, orjson.JSONDecodeError):
            return None
        if response_format.kind == "json_schema":
            caps |= _core.CAP_JSON_SCHEMA
    temperature, top_p, stop, seed, include_usage = sampling
    return turn_request(
        model,
        messages,
        tools,
        tool_choice,
        tool_choice_name,
        True if parallel is None else parallel,
        response_format,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
        stream,
        include_usage,
        raw,
        toolset,
        key,
        prompt_tokens,
        caps,
    )


def _check_n(body: dict[str, Any]) -> None:
    if body.get("n") is not None:
        n = opt_int(body, "n", "n", minimum=1)
        if n != 1:
            raise RequestError(
                "`n` greater than 1 is not supported", param="n", code="unsupported_value"
            )


def _include_usage(body: dict[str, Any]) -> bool:
    """``stream_options.include_usage``, checked."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        bad("stream_options", "must be an object")
    return opt_bool(options, "include_usage", "stream_options.include_usage") or False


def parse_openai_request(body: Any, raw: bytes = b"") -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = req_str(body, "model", "model")
    messages = _messages(body.get("messages"))
    get = body.get
    # Optional fields are checked only when present (most bodies carry a few).
    tools = _tools(get("tools")) if "tools" in body else []
    tool_choice, tool_choice_name = _tool_choice(get("tool_choice"), tools)
    _check_n(body)
    max_tokens = None
    if get("max_completion_tokens") is not None:
        max_tokens = opt_int(body, "max_completion_tokens", "max_completion_tokens", minimum=1)
    elif get("max_tokens") is not None:
        max_tokens = opt_int(body, "max_tokens", "max_tokens", minimum=1)
    stream = False
    if get("stream") is not None:
        stream = opt_bool(body, "stream", "stream") or False
    include_usage = _include_usage(body)
    parallel = opt_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        tool_choice_name=tool_choice_name,
        parallel_tool_calls=True if parallel is None else parallel,
        response_format=_response_format(get("response_format")),
        max_tokens=max_tokens,
        temperature=None
        if get("temperature") is None
        else opt_number(body, "temperature", "temperature", 0.0, 2.0),
        top_p=None if get("top_p") is None else opt_number(body, "top_p", "top_p", 0.0, 1.0),
        stop=stop_list(get("stop"), "stop", limit=4),
        seed=None if get("seed") is None else opt_int(body, "seed", "seed"),
        stream=stream,
        include_usage=include_usage,
        raw=raw,
    )


def _messages(value: Any) -> list[Message]:
    if value is None:
        raise RequestError("missing required parameter: `messages`", param="messages")
    if not isinstance(value, list):
        bad("messages", "must be an array of message objects")
    if not value:
        bad("messages", "must contain at least one message")
    out = []
    for i, m in enumerate(value):
        # Most messages are {"role": ..., "content": "<text>"}: built without the general
        # checks (which would accept them unchanged) and without naming their path.
        if type(m) is dict and len(m) == 2:
            content = m.get("content")
            role = m.get("role")
            # (a role of another type, unhashable say, is _message's to refuse)
            if type(role) is str and type(content) is str and content:
                plain_role = _PLAIN_ROLES.get(role)
                if plain_role is not None:
                    out.append(Message(plain_role, [TextPart(content)]))
                    continue
        out.append(_message(m, f"messages[{i}]"))
    return out


# Roles whose plain-text message needs nothing beyond its text.
_PLAIN_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def _message(m: Any, path: str) -> Message:
    if not isinstance(m, dict):
        bad(path, "must be an object")
    role = m.get("role")
    if role not in _ROLES:
        bad(f"{path}.role", f"must be one of {', '.join(_ROLES)}; got {role!r}")
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        bad(f"{path}.name", "must be a string")
    content = m.get("content")
    if role in ("system", "developer"):
        return Message("system", _text_parts(content, f"{path}.content", required=True), name=name)
    if role == "user":
        return Message("user", _user_parts(content, f"{path}.content"), name=name)
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            bad(f"{path}.tool_call_id", "is required for tool messages and must be a string")
        parts = _text_parts(content, f"{path}.content", required=False)
        return Message("tool", parts, tool_call_id=call_id)
    # assistant
    calls = _tool_calls(m.get("tool_calls"), f"{path}.tool_calls")
    parts = _text_parts(content, f"{path}.content", required=not calls, allow_refusal=True)
    return Message("assistant", parts, tool_calls=calls, name=name)


def _text_parts(
    content: Any, path: str, *, required: bool, allow_refusal: bool = False
) -> list[Part]:
    if content is None:
        if required:
            bad(path, "is required")
        return []
    if isinstance(content, str):
        if not content and required:
            bad(path, "must not be empty")
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        bad(path, "must be a string or an array of content parts")
    parts: list[Part] = []
    for j, part in enumerate(content):
        ppath = f"{path}[{j}]"
        if not isinstance(part, dict):
            bad(ppath, "must be an object")
        kind = part.get("type")
        if kind == "text" or (allow_refusal and kind == "refusal"):
            key = "text" if kind == "text" else "refusal"
            text = part.get(key)
            if not isinstance(text, str):
                bad(f"{ppath}.{key}", "must be a string")
            parts.append(TextPart(text))
        else:
            bad(f"{ppath}.type", f"unsupported content part type {kind!r} here; expected 'text'")
    if required and not any(isinstance(p, TextPart) and p.text for p in parts):
        bad(path, "must not be empty")
    return parts


def _user_parts(content: Any, path: str) -> list[Part]:
    if content is None:
        bad(path, "is required")
    if isinstance(content, str):
        if not content:
            bad(path, "must not be empty")
        return [TextPart(content)]
    if not isinstance(content, list):
        bad(path, "must be a string or an array of content parts")
    if not content:
        bad(path, "must not be empty")
    parts: list[Part] = []
    for j, part in enumerate(content):
        ppath = f"{path}[{j}]"
        if not isinstance(part, dict):
            bad(ppath, "must be an object")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                bad(f"{ppath}.text", "must be a string")
            parts.append(TextPart(text))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url:
                bad(f"{ppath}.image_url.url", "must be a non-empty string")
            parts.append(_image(url, f"{ppath}.image_url.url"))
        else:
            bad(
                f"{ppath}.type",
                f"unsupported content part type {kind!r}; supported: 'text', 'image_url'",
            )
    if not any((isinstance(p, TextPart) and p.text) or isinstance(p, ImagePart) for p in parts):
        bad(path, "must not be empty")
    return parts


def _image(url: str, path: str) -> ImagePart:
    if url.startswith("data:"):
        media_type, data = parse_data_url(url, path)
        return ImagePart(url=url, media_type=media_type, data_b64=data)
    if not url.startswith(("http://", "https://")):
        bad(path, "must be an http(s) URL or a base64 data: URL")
    return ImagePart(url=url)


def _tool_calls(value: Any, path: str) -> list[ToolCall]:
    if value is None:
        return []
    if not isinstance(value, list):
        bad(path, "must be an array")
    calls = []
    for i, call in enumerate(value):
        cpath = f"{path}[{i}]"
        if not isinstance(call, dict):
            bad(cpath, "must be an object")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            bad(f"{cpath}.id", "must be a non-empty string")
        fn = call.get("function")
        if not isinstance(fn, dict):
            bad(f"{cpath}.function", "must be an object")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            bad(f"{cpath}.function.name", "must be a non-empty string")
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            bad(f"{cpath}.function.arguments", "must be a JSON string")
        calls.append(ToolCall(call_id, name, args or "{}"))
    return calls


def _tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        bad("tools", "must be an array")
    tools = []
    seen: set[str] = set()
    for i, t in enumerate(value):
        path = f"tools[{i}]"
        if not isinstance(t, dict):
            bad(path, "must be an object")
        if t.get("type") != "function":
            bad(f"{path}.type", f"unsupported tool type {t.get('type')!r}; expected 'function'")
        fn = t.get("function")
        if not isinstance(fn, dict):
            bad(f"{path}.function", "must be an object")
        name = check_tool_name(fn.get("name"), f"{path}.function.name")
        if name in seen:
            bad(f"{path}.function.name", f"duplicate tool name {name!r}")
        seen.add(name)
        desc = fn.get("description", "")
        if not isinstance(desc, str):
            bad(f"{path}.function.description", "must be a string")
        params = check_schema(
            fn.get("parameters", {"type": "object", "properties": {}}),
            f"{path}.function.parameters",
        )
        strict = fn.get("strict", False)
        tools.append(Tool(name, desc, params, strict=bool(strict)))
    return tools


def _tool_choice(value: Any, tools: list[Tool]) -> tuple[Any, str | None]:
    if value is None:
        return "auto", None
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            bad("tool_choice", "'required' needs at least one tool in `tools`")
        return value, None
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            bad("tool_choice.function.name", "must be a string")
        if name not in {t.name for t in tools}:
            bad("tool_choice.function.name", f"names no tool in `tools`: {name!r}")
        return "function", name
    bad("tool_choice", "must be 'auto', 'none', 'required' or {type: 'function', function: {name}}")


def _response_format(value: Any) -> ResponseFormat:
    if value is None:
        return TEXT_FORMAT
    if not isinstance(value, dict):
        bad("response_format", "must be an object")
    kind = value.get("type")
    if kind == "text":
        return TEXT_FORMAT
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            bad("response_format.json_schema", "is required for type 'json_schema'")
        name = spec.get("name", "response")
        if not isinstance(name, str) or not name:
            bad("response_format.json_schema.name", "must be a non-empty string")
        schema = check_schema(spec.get("schema", {}), "response_format.json_schema.schema")
        return ResponseFormat("json_schema", schema, name, bool(spec.get("strict", False)))
    bad("response_format.type", f"must be 'text', 'json_object' or 'json_schema'; got {kind!r}")


# The tools read lately (per process: requests run on the event loop's thread).
TOOLSETS = ToolSets(_tools)
