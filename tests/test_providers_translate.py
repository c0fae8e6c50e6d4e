"""Pure request/response translation of every adapter, against payloads shaped as the
providers document them."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tiergate.config import DeploymentConfig, Price, ProviderConfig
from tiergate.envelope import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers.anthropic import (
    AnthropicStreamParser,
    build_anthropic_request,
    parse_anthropic_response,
)
from tiergate.providers.base import StreamEnd, StreamEvent, TextDelta, ToolCallDelta, Usage
from tiergate.providers.bedrock import (
    BedrockStreamParser,
    build_converse_request,
    parse_converse_response,
)
from tiergate.providers.gemini import (
    GeminiAdapter,
    GeminiStreamParser,
    build_gemini_request,
    gemini_schema,
    parse_gemini_response,
)
from tiergate.providers.normalise import SSEEvent, SSEParser, StreamCollector
from tiergate.providers.openai import (
    OpenAIStreamParser,
    build_openai_request,
    parse_openai_response,
)
from tiergate.providers.registry import make_adapter
from tiergate.providers.sagemaker import (
    TGIStreamParser,
    build_sagemaker_body,
    parse_sagemaker_response,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = Tool(
    name="get_weather",
    description="Current weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": ["number", "null"]}},
    "required": ["answer", "score"],
    "additionalProperties": False,
}


def dep(model: str = "m-1", **kw: Any) -> DeploymentConfig:
    return DeploymentConfig(
        provider="p", model=model, tier="small", price=Price(input=1, output=1), **kw
    )


def conversation(**kw: Any) -> ChatRequest:
    """system, user (text + image), assistant tool calls, two results, a follow-up."""
    return ChatRequest(
        model="auto",
        messages=[
            Message("system", [TextPart("Be brief.")]),
            Message(
                "user",
                [
                    TextPart("Weather in Paris and Rome? See "),
                    ImagePart(f"data:image/png;base64,{PNG}", "image/png", PNG),
                ],
            ),
            Message(
                "assistant",
                tool_calls=[
                    ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
                    ToolCall("call_b", "get_weather", '{"city": "Rome"}'),
                ],
            ),
            Message("tool", [TextPart('{"temp": 21}')], tool_call_id="call_a"),
            Message("tool", [TextPart("sunny")], tool_call_id="call_b"),
            Message("user", [TextPart("Which is warmer?")]),
        ],
        tools=[WEATHER],
        **kw,
    )


def feed_sse(parser: Any, wire: bytes) -> list[StreamEvent]:
    sse = SSEParser()
    out: list[StreamEvent] = []
    for ev in [*sse.feed(wire), *sse.finish()]:
        out.extend(parser.feed(ev))
        if parser.done:
            return out
    out.extend(parser.finish())
    return out


def collect(events: list[StreamEvent]) -> StreamCollector:
    c = StreamCollector()
    for e in events:
        c.add(e)
    return c


# ================================================================ OpenAI


def test_openai_request() -> None:
    req = conversation(
        tool_choice="function",
        tool_choice_name="get_weather",
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        seed=7,
        max_tokens=300,
    )
    body = build_openai_request(req, dep())
    assert body["model"] == "m-1"
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert msgs[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}"},
    }
    assert msgs[2]["content"] is None
    assert msgs[2]["tool_calls"][1]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Rome"}',
    }
    assert msgs[3] == {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'}
    assert msgs[5]["content"] == "Which is warmer?"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        0.2,
        0.9,
        ["END"],
        7,
    )
    assert "stream" not in body


def test_openai_compatible_and_streaming_request() -> None:
    req = ChatRequest(
        model="auto",
        messages=[Message("user", [TextPart("hi")])],
        stream=True,
        response_format=ResponseFormat("json_schema", SCHEMA, "reply", strict=True),
    )
    body = build_openai_request(req, dep(max_output_tokens=111), compatible=True)
    assert body["max_tokens"] == 111 and "max_completion_tokens" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True},
    }
    assert "tools" not in body and "tool_choice" not in body


def test_openai_response_documented_shape() -> None:
    doc = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1677652288,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 82,
            "completion_tokens": 17,
            "total_tokens": 99,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    c = parse_openai_response(doc)
    assert c.tool_calls == [ToolCall("call_abc", "get_weather", '{"city":"Paris"}')]
    assert c.finish_reason == "tool_calls" and c.text is None
    assert c.usage == Usage(82, 17, 0, 0)
    assert c.model == "gpt-4o-mini-2024-07-18" and c.provider_response_id == "chatcmpl-123"


def test_openai_refusal_and_malformed() -> None:
    doc = {
        "model": "m",
        "choices": [
            {
                "message": {"content": None, "refusal": "I can't help with that."},
                "finish_reason": "stop",
            }
        ],
    }
    assert parse_openai_response(doc).refusal == "I can't help with that."
    with pytest.raises(ProviderError) as info:
        parse_openai_response({"choices": []})
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT


def _openai_chunk(delta: dict[str, Any], finish: str | None = None, **kw: Any) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **kw,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def test_openai_stream_tool_calls() -> None:
    wire = (
        _openai_chunk({"role": "assistant", "content": None})
        + _openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        )
        + _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})
        + _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
        + _openai_chunk({}, "tool_calls")
        + b'data: {"id":"chatcmpl-1","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":2}}}\n\n'
        + b"data: [DONE]\n\n"
    )
    events = feed_sse(OpenAIStreamParser("openai"), wire)
    assert events[0] == ToolCallDelta(0, "call_1", "get_weather", "")
    done = collect(events).completion()
    assert done.tool_calls == [ToolCall("call_1", "get_weather", '{"city":"Paris"}')]
    assert done.finish_reason == "tool_calls"
    assert done.usage == Usage(9, 5, 2, 0)


def test_openai_stream_text_refusal_and_cut() -> None:
    wire = _openai_chunk({"content": "Hel"}) + _openai_chunk({"content": "lo"})
    with pytest.raises(ProviderError, match="stream ended before completion") as info:
        feed_sse(OpenAIStreamParser(), wire)
    assert info.value.error_class is ErrorClass.SERVER_ERROR
    wire += _openai_chunk({"refusal": "no"}, "stop") + b"data: [DONE]\n\n"
    events = feed_sse(OpenAIStreamParser(), wire)
    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")]
    assert isinstance(events[-1], StreamEnd) and events[-1].refusal == "no"


def test_openai_stream_malformed_and_error_chunk() -> None:
    with pytest.raises(ProviderError) as info:
        feed_sse(OpenAIStreamParser(), b"data: {not json\n\n")
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT
    with pytest.raises(ProviderError) as info:
        feed_sse(
            OpenAIStreamParser(),
            b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
        )
    assert info.value.error_class is ErrorClass.SERVER_ERROR


# ================================================================ Anthropic


def test_anthropic_request() -> None:
    req = conversation(temperature=1.7, stop=["END"], parallel_tool_calls=False)
    body = build_anthropic_request(req, dep("claude-x", max_output_tokens=512))
    assert body["model"] == "claude-x" and body["max_tokens"] == 512
    assert body["system"] == "Be brief."
    assert body["temperature"] == 1.0
    assert body["stop_sequences"] == ["END"]
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert msgs[1]["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    # both tool results, then the follow-up, in one user turn
    assert [b["type"] for b in msgs[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert msgs[2]["content"][1] == {
        "type": "tool_result",
        "tool_use_id": "call_b",
        "content": "sunny",
    }
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": WEATHER.description,
            "input_schema": WEATHER.parameters,
        }
    ]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "name", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("function", "get_weather", {"type": "tool", "name": "get_weather"}),
        ("none", None, {"type": "none"}),
    ],
)
def test_anthropic_tool_choice(choice: Any, name: str | None, expected: dict[str, Any]) -> None:
    req = conversation(tool_choice=choice, tool_choice_name=name)
    assert build_anthropic_request(req, dep())["tool_choice"] == expected


def test_anthropic_json_schema_by_tool_forcing() -> None:
    req = ChatRequest(
        model="auto",
        messages=[Message("user", [TextPart("rate it")])],
        response_format=ResponseFormat("json_schema", SCHEMA, "rating"),
    )
    body = build_anthropic_request(req, dep())
    assert body["tools"] == [
        {
            "name": "rating",
            "description": "Give the final answer as this tool's input.",
            "input_schema": SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "rating"}
    doc = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "rating",
                "input": {"answer": "ok", "score": 3},
            }
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 12, "output_tokens": 8},
    }
    c = parse_anthropic_response(doc, json_tool="rating", schema=SCHEMA)
    assert orjson.loads(c.text or "") == {"answer": "ok", "score": 3}
    assert c.finish_reason == "stop" and c.tool_calls == []


def test_anthropic_non_object_schema_is_wrapped() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    req = ChatRequest(
        model="auto",
        messages=[Message("user", [TextPart("primes")])],
        response_format=ResponseFormat("json_schema", schema, "primes"),
    )
    body = build_anthropic_request(req, dep())
    assert body["tools"][0]["input_schema"]["properties"]["value"] == schema
    doc = {
        "model": "m",
        "content": [{"type": "tool_use", "id": "t", "name": "primes", "input": {"value": [2, 3]}}],
        "stop_reason": "tool_use",
        "usage": {},
    }
    assert parse_anthropic_response(doc, json_tool="primes", schema=schema).text == "[2,3]"


def test_anthropic_response_documented_shape() -> None:
    doc = {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 30,
        },
    }
    c = parse_anthropic_response(doc)
    assert c.text == "Let me check."
    assert c.tool_calls == [ToolCall("toolu_01A", "get_weather", '{"city":"Paris"}')]
    assert c.finish_reason == "tool_calls"
    assert c.usage == Usage(125, 30, 100, 0)


ANTHROPIC_STREAM = b"""event: message_start
data: {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-3-5-haiku-20241022", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 472, "cache_read_input_tokens": 8, "output_tokens": 2}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01T", "name": "get_weather", "input": {}}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\\"city\\": \\"San"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " Francisco\\"}"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}

event: message_stop
data: {"type": "message_stop"}

"""


def test_anthropic_stream_documented_events() -> None:
    events = feed_sse(AnthropicStreamParser("anthropic"), ANTHROPIC_STREAM)
    assert events[0] == TextDelta("Okay")
    assert events[1] == ToolCallDelta(0, "toolu_01T", "get_weather", "")
    done = collect(events).completion()
    assert done.tool_calls == [ToolCall("toolu_01T", "get_weather", '{"city": "San Francisco"}')]
    assert done.finish_reason == "tool_calls"
    assert done.usage == Usage(480, 89, 8, 0)
    assert done.model == "claude-3-5-haiku-20241022"


def test_a_streamed_tool_without_input_has_empty_object_arguments() -> None:
    # A tool without parameters: Anthropic streams only an empty input_json_delta.
    start = ANTHROPIC_STREAM.index(
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{'
    )
    end = ANTHROPIC_STREAM.index(
        b'event: content_block_stop\ndata: {"type": "content_block_stop", "index": 1}'
    )
    events = feed_sse(
        AnthropicStreamParser("anthropic"), ANTHROPIC_STREAM[:start] + ANTHROPIC_STREAM[end:]
    )
    assert ToolCallDelta(0, arguments="{}") in events
    done = collect(events).completion()
    assert done.tool_calls == [ToolCall("toolu_01T", "get_weather", "{}")]


def test_anthropic_stream_cut_and_error_event() -> None:
    cut = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: message_delta")]
    with pytest.raises(ProviderError, match="stream ended before completion"):
        feed_sse(AnthropicStreamParser(), cut)
    err = cut + (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n'
    )
    with pytest.raises(ProviderError) as info:
        feed_sse(AnthropicStreamParser(), err)
    assert info.value.error_class is ErrorClass.OVERLOADED


def test_anthropic_stream_json_tool_becomes_text() -> None:
    wire = ANTHROPIC_STREAM.replace(b'"name": "get_weather"', b'"name": "answer"')
    events = feed_sse(AnthropicStreamParser(json_tool="answer"), wire)
    c = collect(events)
    assert c.text == '{"city": "San Francisco"}'
    assert c.tool_calls() == []
    assert c.completion().finish_reason == "stop"


# ================================================================ Gemini


def test_gemini_schema_conversion() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "properties": {
            "name": {"type": ["string", "null"], "description": "who"},
            "kind": {"const": "x"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "either": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tag": {"type": "string", "enum": ["a", "b"], "format": "uri"},
        },
        "required": ["name", "ghost"],
    }
    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "description": "who", "nullable": True},
            "kind": {"type": "STRING", "enum": ["x"]},
            "items": {
                "type": "ARRAY",
                "items": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}},
            },
            "either": {"nullable": True, "type": "STRING"},
            "tag": {"type": "STRING", "enum": ["a", "b"]},
        },
        "required": ["name"],
    }


def test_gemini_request() -> None:
    req = conversation(
        tool_choice="function",
        tool_choice_name="get_weather",
        temperature=0.3,
        top_p=0.8,
        stop=["END"],
        seed=3,
        response_format=ResponseFormat("json_schema", SCHEMA, "r"),
    )
    body = build_gemini_request(req, dep(max_output_tokens=64))
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    contents = body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert contents[1]["parts"][0] == {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}}
    }
    assert contents[2]["parts"][0] == {
        "functionResponse": {"name": "get_weather", "response": {"temp": 21}}
    }
    assert contents[2]["parts"][1] == {
        "functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}
    }
    assert contents[2]["parts"][2] == {"text": "Which is warmer?"}
    decl = body["tools"][0]["functionDeclarations"][0]
    assert decl["parameters"] == {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}},
        "required": ["city"],
    }
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    gen = body["generationConfig"]
    assert gen["maxOutputTokens"] == 64
    assert (gen["temperature"], gen["topP"], gen["stopSequences"], gen["seed"]) == (
        0.3,
        0.8,
        ["END"],
        3,
    )
    assert gen["responseMimeType"] == "application/json"
    assert "additionalProperties" not in orjson.dumps(gen["responseSchema"]).decode()


def test_gemini_urls() -> None:
    def urls(base: str | None) -> tuple[str, str]:
        adapter = GeminiAdapter("g", ProviderConfig(kind="gemini", base_url=base))
        return adapter.urls("gemini-1.5-flash-002")

    assert urls(None)[0] == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-1.5-flash-002:generateContent"
    )
    assert urls("http://127.0.0.1:9/v1")[1] == (
        "http://127.0.0.1:9/v1/models/gemini-1.5-flash-002:streamGenerateContent?alt=sse"
    )
    assert urls("http://127.0.0.1:9/")[0].startswith("http://127.0.0.1:9/v1beta/models/")


def test_gemini_response_documented_shape() -> None:
    doc = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Checking."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    ],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 50,
            "candidatesTokenCount": 10,
            "totalTokenCount": 65,
            "thoughtsTokenCount": 5,
            "cachedContentTokenCount": 32,
        },
        "modelVersion": "gemini-1.5-flash-002",
        "responseId": "resp-1",
    }
    c = parse_gemini_response(doc)
    assert c.text == "Checking."
    assert len(c.tool_calls) == 1 and c.tool_calls[0].name == "get_weather"
    assert c.tool_calls[0].arguments == '{"city":"Paris"}'
    assert c.tool_calls[0].id.startswith("call_")
    assert parse_gemini_response(doc).tool_calls[0].id == c.tool_calls[0].id  # stable
    assert c.finish_reason == "tool_calls"
    assert c.usage == Usage(50, 15, 32, 5)


def test_gemini_safety_blocks() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 4},
    }
    c = parse_gemini_response(blocked, model="g")
    assert c.finish_reason == "content_filter" and c.text is None
    stopped = {"candidates": [{"finishReason": "SAFETY", "content": {"parts": []}}]}
    assert parse_gemini_response(stopped).finish_reason == "content_filter"
    with pytest.raises(ProviderError) as info:
        parse_gemini_response({"candidates": []})
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT


def test_gemini_stream() -> None:
    def chunk(doc: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(doc) + b"\r\n\r\n"

    wire = chunk(
        {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}]}
    ) + chunk(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": "lo"},
                            {"functionCall": {"name": "f", "args": {"x": 1}}},
                        ]
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4},
            "modelVersion": "gemini-x",
        }
    )
    events = feed_sse(GeminiStreamParser(), wire)
    c = collect(events).completion()
    assert c.text == "Hello"
    assert [t.name for t in c.tool_calls] == ["f"] and c.tool_calls[0].arguments == '{"x":1}'
    assert c.finish_reason == "tool_calls" and c.usage == Usage(3, 4) and c.model == "gemini-x"
    with pytest.raises(ProviderError, match="stream ended"):
        feed_sse(GeminiStreamParser(), wire[: wire.index(b"\r\n\r\n") + 4])


# ================================================================ Bedrock


def test_converse_request() -> None:
    req = conversation(tool_choice="required", temperature=0.5, stop=["END"], max_tokens=99)
    params = build_converse_request(req, dep("meta.llama3-1-70b-instruct-v1:0"))
    assert params["modelId"] == "meta.llama3-1-70b-instruct-v1:0"
    assert params["system"] == [{"text": "Be brief."}]
    assert params["inferenceConfig"] == {
        "maxTokens": 99,
        "temperature": 0.5,
        "stopSequences": ["END"],
    }
    msgs = params["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    image = msgs[0]["content"][1]["image"]
    assert image["format"] == "png" and image["source"]["bytes"] == base64.b64decode(PNG)
    assert msgs[1]["content"][0] == {
        "toolUse": {"toolUseId": "call_a", "name": "get_weather", "input": {"city": "Paris"}}
    }
    assert msgs[2]["content"][0] == {
        "toolResult": {"toolUseId": "call_a", "content": [{"text": '{"temp": 21}'}]}
    }
    assert msgs[2]["content"][2] == {"text": "Which is warmer?"}
    assert params["toolConfig"]["toolChoice"] == {"any": {}}
    assert params["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": WEATHER.parameters
    }


def test_converse_tool_choice_none() -> None:
    plain = ChatRequest(
        model="auto",
        messages=[Message("user", [TextPart("hi")])],
        tools=[WEATHER],
        tool_choice="none",
    )
    assert "toolConfig" not in build_converse_request(plain, dep())
    # with tool blocks in the history, Converse needs the tools declared
    params = build_converse_request(conversation(tool_choice="none"), dep())
    assert "toolChoice" not in params["toolConfig"]


def test_converse_refuses_image_urls() -> None:
    req = ChatRequest(model="auto", messages=[Message("user", [ImagePart("https://x/y.png")])])
    with pytest.raises(ProviderError) as info:
        build_converse_request(req, dep())
    assert info.value.error_class is ErrorClass.BAD_REQUEST


def test_converse_response_and_json_tool() -> None:
    doc = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Sure."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_1",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 30,
            "outputTokens": 12,
            "totalTokens": 42,
            "cacheReadInputTokens": 10,
        },
        "metrics": {"latencyMs": 420},
        "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 200},
    }
    c = parse_converse_response(doc, model="m")
    assert c.text == "Sure." and c.finish_reason == "tool_calls"
    assert c.tool_calls == [ToolCall("tooluse_1", "get_weather", '{"city":"Rome"}')]
    assert c.usage == Usage(40, 12, 10, 0) and c.provider_response_id == "req-1"
    req = ChatRequest(
        model="auto",
        messages=[Message("user", [TextPart("x")])],
        response_format=ResponseFormat("json_schema", SCHEMA, "r"),
    )
    params = build_converse_request(req, dep())
    assert params["toolConfig"]["toolChoice"] == {"tool": {"name": "r"}}
    doc["output"]["message"]["content"] = [  # type: ignore[index]
        {"toolUse": {"toolUseId": "t", "name": "r", "input": {"answer": "a", "score": None}}}
    ]
    c = parse_converse_response(doc, json_tool="r", schema=SCHEMA)
    assert orjson.loads(c.text or "") == {"answer": "a", "score": None}
    assert c.finish_reason == "stop"


def test_converse_stream_events() -> None:
    events_in: list[dict[str, Any]] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "tu1", "name": "f"}},
                "contentBlockIndex": 1,
            }
        },
        {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"a":'}}, "contentBlockIndex": 1}},
        {"contentBlockDelta": {"delta": {"toolUse": {"input": "1}"}}, "contentBlockIndex": 1}},
        {"contentBlockStop": {"contentBlockIndex": 1}},
        {"messageStop": {"stopReason": "tool_use"}},
        {
            "metadata": {
                "usage": {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11},
                "metrics": {"latencyMs": 9},
            }
        },
    ]
    parser = BedrockStreamParser(model="m")
    out: list[StreamEvent] = []
    for ev in events_in:
        out.extend(parser.feed(ev))
    assert parser.done
    c = collect(out).completion()
    assert c.text == "Hi" and c.tool_calls == [ToolCall("tu1", "f", '{"a":1}')]
    assert c.finish_reason == "tool_calls" and c.usage == Usage(5, 6)
    cut = BedrockStreamParser()
    for ev in events_in[:5]:
        cut.feed(ev)
    with pytest.raises(ProviderError, match="stream ended"):
        cut.finish()


def test_bedrock_stream_tool_without_input_has_empty_object_arguments() -> None:
    parser = BedrockStreamParser(model="m")
    out: list[StreamEvent] = []
    for ev in [
        {"messageStart": {"role": "assistant"}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "tu1", "name": "now"}},
                "contentBlockIndex": 0,
            }
        },
        {"contentBlockDelta": {"delta": {"toolUse": {"input": ""}}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": {"inputTokens": 5, "outputTokens": 6, "totalTokens": 11}}},
    ]:
        out.extend(parser.feed(ev))
    assert parser.done
    assert collect(out).completion().tool_calls == [ToolCall("tu1", "now", "{}")]


# ================================================================ SageMaker


def test_sagemaker_openai_messages_body() -> None:
    req = conversation(stream=True)
    body = build_sagemaker_body(req, dep("endpoint-1"))
    assert "model" not in body and body["max_tokens"] == 4096
    assert body["stream"] is True


def test_sagemaker_tgi_body_and_response() -> None:
    req = ChatRequest(
        model="auto",
        messages=[Message("system", [TextPart("S")]), Message("user", [TextPart("U")])],
        temperature=0.0,
        top_p=1.0,
        stop=["\n\n"],
        response_format=ResponseFormat("json_schema", SCHEMA, "r"),
    )
    d = dep("ep", payload_format="tgi", max_output_tokens=50)
    body = build_sagemaker_body(req, d)
    assert body["inputs"] == "System: S\n\nUser: U\n\nAssistant:"
    params = body["parameters"]
    assert params["max_new_tokens"] == 50 and params["do_sample"] is False
    assert "temperature" not in params and "top_p" not in params
    assert params["grammar"] == {"type": "json", "value": SCHEMA}
    raw = orjson.dumps(
        [
            {
                "generated_text": " hello",
                "details": {"finish_reason": "length", "generated_tokens": 50},
            }
        ]
    )
    c = parse_sagemaker_response(raw, d)
    assert c.text == " hello" and c.finish_reason == "length" and c.usage.output_tokens == 50
    with pytest.raises(ProviderError) as info:
        build_sagemaker_body(conversation(), d)
    assert info.value.error_class is ErrorClass.BAD_REQUEST


def test_tgi_prompt_templates() -> None:
    req = ChatRequest(
        model="auto",
        messages=[Message("system", [TextPart("S")]), Message("user", [TextPart("U")])],
    )
    llama = build_sagemaker_body(req, dep("llama-3-1-8b-instruct", payload_format="tgi"))
    assert llama["inputs"] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    mistral = build_sagemaker_body(req, dep("mistral-7b", payload_format="tgi"))
    assert mistral["inputs"] == "<s>[INST] S\n\nU [/INST]"
    qwen = build_sagemaker_body(req, dep("qwen2-7b", payload_format="tgi"))
    assert qwen["inputs"].endswith("<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")


def test_tgi_stream() -> None:
    wire = (
        b'data:{"index":1,"token":{"id":1,"text":"Hel","logprob":-0.1,"special":false},"generated_text":null,"details":null}\n\n'
        b'data:{"index":2,"token":{"id":2,"text":"lo","logprob":-0.1,"special":false},"generated_text":null,"details":null}\n\n'
        b'data:{"index":3,"token":{"id":3,"text":"</s>","logprob":-0.1,"special":true},"generated_text":"Hello","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null}}\n\n'
    )
    events = feed_sse(TGIStreamParser(model="ep"), wire)
    c = collect(events).completion()
    assert c.text == "Hello" and c.finish_reason == "stop" and c.usage.output_tokens == 3
    with pytest.raises(ProviderError, match="stream ended"):
        feed_sse(TGIStreamParser(), wire[:100])


# ================================================================ registry


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("openai", "OpenAIAdapter"),
        ("openai_compatible", "OpenAIAdapter"),
        ("anthropic", "AnthropicAdapter"),
        ("gemini", "GeminiAdapter"),
        ("bedrock", "BedrockAdapter"),
        ("sagemaker", "SageMakerAdapter"),
    ],
)
def test_registry(kind: Any, cls: str) -> None:
    config = ProviderConfig(kind=kind, base_url="http://127.0.0.1:1")
    adapter = make_adapter("p", config)
    assert type(adapter).__name__ == cls
    assert adapter.name == "p" and adapter.config is config


def test_unused_sse_event_type_is_exported() -> None:
    assert SSEEvent("a", "b") == SSEEvent("a", "b")
