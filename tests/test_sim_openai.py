"""The OpenAI SDK against the simulator: the proof that the wire is OpenAI's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import jsonschema
import openai
import pytest

from test_sim_support import OPENAI_MODEL, add_fault, sim, stats
from tiergate.sim.server import SimServer

__all__ = ["sim"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0, timeout=5)
    try:
        yield c
    finally:
        await c.close()


async def test_text(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "Say something nice"}]
    )
    choice = r.choices[0]
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


async def test_max_tokens_gives_length(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "Write an essay"}], max_tokens=3
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3


async def test_stream_with_usage_matches_unary(client: openai.AsyncOpenAI) -> None:
    messages: list = [{"role": "user", "content": "Explain routing"}]
    whole = await client.chat.completions.create(model=OPENAI_MODEL, messages=messages)
    stream = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, n = "", None, None, 0
    async for chunk in stream:
        n += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == n - 3  # role, finish, usage chunks


async def test_required_tool_call_valid_for_schema(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "What should I wear?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].type == "function" and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])


async def test_streamed_tool_call_fragments(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "use get_weather for Paris"}],
        tools=[WEATHER],
        stream=True,
    )
    name, args, ids = "", "", set()
    async for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or []:
            assert tc.index == 0
            if tc.id:
                ids.add(tc.id)
            if tc.function and tc.function.name:
                name = tc.function.name
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
    assert name == "get_weather" and len(ids) == 1
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])


async def test_auto_without_mention_answers_text(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "Hello"}], tools=[WEATHER]
    )
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


async def test_tool_result_turn(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 degrees"},
        ],
        tools=[WEATHER],
    )
    text = r.choices[0].message.content
    assert text and "sunny, 21 degrees" in text and "get_weather" in text


async def test_json_schema_response(client: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["title", "tags", "score"],
        "additionalProperties": False,
    }
    r = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "Summarise"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": schema, "strict": True},
        },
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)
    r = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


async def test_models_and_auth(sim: SimServer, client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert OPENAI_MODEL in ids
    async with aiohttp.ClientSession() as s, s.post(f"{sim.url}/v1/chat/completions", json={}) as r:
        assert r.status == 401
        body = await r.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=OPENAI_MODEL, messages=[])


async def test_rate_limit_fault_is_typed(sim: SimServer, client: openai.AsyncOpenAI) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="ratelimit", retry_after_s=2.5)
    with pytest.raises(openai.RateLimitError) as err:
        await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.response.headers["retry-after"] == "2.5"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.code == "rate_limit_exceeded"
    st = (await stats(sim))[OPENAI_MODEL]
    assert st["calls"] == 1 and st["errors"] == 1 and st["output_tokens"] == 0


async def test_error_fault_status(sim: SimServer, client: openai.AsyncOpenAI) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="error", status=500)
    with pytest.raises(openai.InternalServerError) as err:
        await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 500
    assert isinstance(err.value.body, dict) and err.value.body["type"] == "server_error"
