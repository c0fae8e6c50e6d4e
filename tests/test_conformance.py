"""Conformance matrix through the sidecar, real HTTP end to end:
{OpenAI SDK, Anthropic SDK} × {openai, anthropic, gemini, bedrock, sagemaker}
× {text, tools with a result turn, JSON schema, streaming}.

Each case pins the deployment of one provider and checks that it (and only it) served,
that the SDK parsed the answer into its own models, and, on the OpenAI surface, that the
raw payloads match OpenAI's published OpenAPI schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import orjson
import pytest

from conftest import OPENAPI
from harness import Stack, fast_sim_config
from openai_spec import validate

PROVIDERS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku",
    "gemini": "gemini-flash",
    "bedrock": "llama-70b",
    "sagemaker": "llama-8b",
}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"],
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(fast_sim_config())
    yield s
    s.close()


@pytest.fixture(scope="module")
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="app-key", max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def ant(stack: Stack) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
    yield client
    client.close()


def spec_check(schema: str, payload: Any) -> None:
    if Path(OPENAPI).exists():
        validate(OPENAPI, schema, payload)


def served_by(headers: Any, deployment: str) -> None:
    assert headers["x-tiergate-deployment"] == deployment
    assert headers["x-tiergate-attempts"] == "1"
    assert float(headers["x-tiergate-decision-us"]) >= 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_text(stack: Stack, oai: openai.OpenAI, provider: str) -> None:
    dep = PROVIDERS[provider]
    before = stack.calls(dep)
    raw = oai.chat.completions.with_raw_response.create(
        model=dep,
        messages=[{"role": "user", "content": f"Say something about {provider}."}],
        max_tokens=60,
    )
    served_by(raw.headers, dep)
    payload = orjson.loads(raw.http_response.content)
    spec_check("CreateChatCompletionResponse", payload)
    done = raw.parse()
    assert done.choices[0].message.content
    assert done.choices[0].finish_reason in ("stop", "length")
    assert (
        done.usage is not None and done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    )
    assert stack.calls(dep) == before + 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_tools_with_result_turn(stack: Stack, oai: openai.OpenAI, provider: str) -> None:
    dep = PROVIDERS[provider]
    tools: Any = [{"type": "function", "function": WEATHER}]
    question: Any = [
        {"role": "user", "content": f"Weather in Oslo via {provider}? Use get_weather."}
    ]
    raw = oai.chat.completions.with_raw_response.create(
        model=dep, messages=question, tools=tools, tool_choice="required"
    )
    served_by(raw.headers, dep)
    spec_check("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(orjson.loads(call.function.arguments), WEATHER["parameters"])
    turn = [
        *question,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 4, "sky": "overcast"}'},
    ]
    raw = oai.chat.completions.with_raw_response.create(model=dep, messages=turn, tools=tools)
    served_by(raw.headers, dep)
    second = raw.parse()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_json_schema(stack: Stack, oai: openai.OpenAI, provider: str) -> None:
    dep = PROVIDERS[provider]
    fmt: Any = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
    }
    raw = oai.chat.completions.with_raw_response.create(
        model=dep,
        messages=[{"role": "user", "content": f"Largest city ({provider})?"}],
        response_format=fmt,
    )
    served_by(raw.headers, dep)
    spec_check("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))
    content = raw.parse().choices[0].message.content
    assert content is not None
    jsonschema.validate(orjson.loads(content), SCHEMA)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_streaming(stack: Stack, oai: openai.OpenAI, provider: str) -> None:
    dep = PROVIDERS[provider]
    body = {
        "model": dep,
        "messages": [{"role": "user", "content": f"Stream a few words ({provider})."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = stack.post("/v1/chat/completions", body)
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    served_by(resp.headers, dep)
    frames = [f for f in resp.data.decode().split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    chunks = [orjson.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    for chunk in chunks:
        spec_check("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    # The SDK streams the same thing.
    stream = oai.chat.completions.create(model=dep, messages=body["messages"], stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(text) > 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_streamed_tool_calls(stack: Stack, oai: openai.OpenAI, provider: str) -> None:
    dep = PROVIDERS[provider]
    tools: Any = [{"type": "function", "function": WEATHER}]
    stream = oai.chat.completions.create(
        model=dep,
        messages=[{"role": "user", "content": f"Weather in Rome ({provider} stream)?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    args, names, finish = "", [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            args += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"
    jsonschema.validate(orjson.loads(args), WEATHER["parameters"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_text(stack: Stack, ant: anthropic.Anthropic, provider: str) -> None:
    dep = PROVIDERS[provider]
    raw = ant.messages.with_raw_response.create(
        model=dep,
        max_tokens=80,
        system="Be brief.",
        messages=[{"role": "user", "content": f"Hello {provider}"}],
    )
    served_by(raw.headers, dep)
    msg = raw.parse()
    anthropic.types.Message.model_validate(orjson.loads(raw.http_response.content))
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_tools_with_result_turn(
    stack: Stack, ant: anthropic.Anthropic, provider: str
) -> None:
    dep = PROVIDERS[provider]
    tools: Any = [
        {
            "name": WEATHER["name"],
            "description": WEATHER["description"],
            "input_schema": WEATHER["parameters"],
        }
    ]
    question: Any = [
        {"role": "user", "content": f"Weather in Paris ({provider})? Use get_weather."}
    ]
    raw = ant.messages.with_raw_response.create(
        model=dep, max_tokens=200, messages=question, tools=tools, tool_choice={"type": "any"}
    )
    served_by(raw.headers, dep)
    msg = raw.parse()
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.id
    jsonschema.validate(use.input, WEATHER["parameters"])
    turn = [
        *question,
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C, clear"}],
        },
    ]
    raw = ant.messages.with_raw_response.create(
        model=dep, max_tokens=200, messages=turn, tools=tools
    )
    served_by(raw.headers, dep)
    final = raw.parse()
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text" and final.content[0].text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_json_schema(stack: Stack, ant: anthropic.Anthropic, provider: str) -> None:
    dep = PROVIDERS[provider]
    raw = ant.messages.with_raw_response.create(
        model=dep,
        max_tokens=200,
        messages=[{"role": "user", "content": f"Largest city ({provider}, anthropic)?"}],
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    served_by(raw.headers, dep)
    msg = raw.parse()
    assert msg.content[0].type == "text"
    jsonschema.validate(orjson.loads(msg.content[0].text), SCHEMA)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_streaming(stack: Stack, ant: anthropic.Anthropic, provider: str) -> None:
    dep = PROVIDERS[provider]
    with ant.messages.stream(
        model=dep,
        max_tokens=100,
        messages=[{"role": "user", "content": f"Stream please ({provider})"}],
    ) as stream:
        served_by(stream.response.headers, dep)
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events
    assert final.content[0].type == "text" and final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_streamed_tool_use(stack: Stack, ant: anthropic.Anthropic, provider: str) -> None:
    dep = PROVIDERS[provider]
    tools: Any = [
        {
            "name": WEATHER["name"],
            "description": WEATHER["description"],
            "input_schema": WEATHER["parameters"],
        }
    ]
    with ant.messages.stream(
        model=dep,
        max_tokens=200,
        messages=[{"role": "user", "content": f"Weather in Lima ({provider} stream)?"}],
        tools=tools,
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use"
    jsonschema.validate(use.input, WEATHER["parameters"])


def test_models_lists_routes(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"auto", "fast", "small", "large", *PROVIDERS.values()} <= ids
