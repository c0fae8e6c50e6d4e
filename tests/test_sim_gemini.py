"""The google-genai SDK against the simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import httpx2
import jsonschema
import pytest
from google import genai
from google.genai import errors, types

from test_sim_support import GEMINI_MODEL, add_fault, sim
from tiergate.sim.server import SimServer

__all__ = ["sim"]


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[genai.Client]:
    # An explicit httpx client: the SDK's own aiohttp path subclasses ClientSession, which
    # aiohttp deprecates (a warning, hence an error under filterwarnings=error).
    http = httpx2.AsyncClient(timeout=5)
    c = genai.Client(
        api_key="x",
        http_options=types.HttpOptions(
            base_url=sim.url,
            retry_options=types.HttpRetryOptions(attempts=1),
            httpx_async_client=http,
        ),
    )
    try:
        yield c
    finally:
        await c.aio.aclose()
        c.close()
        await http.aclose()


async def test_generate_content(client: genai.Client) -> None:
    r = await client.aio.models.generate_content(
        model=GEMINI_MODEL,
        contents="Describe a river",
        config=types.GenerateContentConfig(system_instruction="Be brief", max_output_tokens=400),
    )
    assert r.text
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    assert u is not None and u.prompt_token_count and u.candidates_token_count
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    short = await client.aio.models.generate_content(
        model=GEMINI_MODEL,
        contents="Describe a river",
        config=types.GenerateContentConfig(max_output_tokens=2),
    )
    assert short.candidates and short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_stream_matches_unary(client: genai.Client) -> None:
    whole = await client.aio.models.generate_content(model=GEMINI_MODEL, contents="Stream it")
    text, chunks, last = "", 0, None
    async for chunk in await client.aio.models.generate_content_stream(
        model=GEMINI_MODEL, contents="Stream it"
    ):
        chunks += 1
        text += chunk.text or ""
        last = chunk
    assert chunks > 1 and text == whole.text
    assert last is not None and last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count  # type: ignore[union-attr]


def _weather() -> types.Tool:
    return types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_forecast",
                description="Forecast for a place",
                parameters=types.Schema(
                    type=types.Type.OBJECT,
                    properties={
                        "place": types.Schema(type=types.Type.STRING),
                        "days": types.Schema(type=types.Type.INTEGER, minimum=1, maximum=5),
                    },
                    required=["place", "days"],
                ),
            )
        ]
    )


async def test_function_calling(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[_weather()],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY
            )
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    r = await client.aio.models.generate_content(
        model=GEMINI_MODEL, contents="Rain tomorrow?", config=config
    )
    calls = r.function_calls
    assert calls and calls[0].name == "get_forecast"
    args = calls[0].args or {}
    assert isinstance(args["place"], str) and 1 <= args["days"] <= 5
    follow = await client.aio.models.generate_content(
        model=GEMINI_MODEL,
        contents=[
            types.Content(role="user", parts=[types.Part(text="Rain tomorrow?")]),
            types.Content(role="model", parts=[types.Part(function_call=calls[0])]),
            types.Content(
                role="user",
                parts=[
                    types.Part.from_function_response(
                        name="get_forecast", response={"rain": "heavy"}
                    )
                ],
            ),
        ],
        config=types.GenerateContentConfig(tools=[_weather()]),
    )
    assert follow.text and "heavy" in follow.text and "get_forecast" in follow.text


async def test_response_schema_both_cases(client: genai.Client) -> None:
    schema = types.Schema(
        type=types.Type.OBJECT,
        properties={
            "name": types.Schema(type=types.Type.STRING),
            "ingredients": types.Schema(
                type=types.Type.ARRAY, items=types.Schema(type=types.Type.STRING)
            ),
            "minutes": types.Schema(type=types.Type.INTEGER),
        },
        required=["name", "ingredients", "minutes"],
    )
    r = await client.aio.models.generate_content(
        model=GEMINI_MODEL,
        contents="A recipe",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=schema
        ),
    )
    value = json.loads(r.text or "")
    jsonschema.validate(
        value,
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "ingredients": {"type": "array", "items": {"type": "string"}},
                "minutes": {"type": "integer"},
            },
            "required": ["name", "ingredients", "minutes"],
        },
    )
    lower = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    r = await client.aio.models.generate_content(
        model=GEMINI_MODEL,
        contents="Is it ok?",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=lower
        ),
    )
    jsonschema.validate(json.loads(r.text or ""), lower)


async def test_errors_in_google_shape(sim: SimServer, client: genai.Client) -> None:
    await add_fault(sim, model=GEMINI_MODEL, kind="ratelimit", retry_after_s=2)
    with pytest.raises(errors.ClientError) as err:
        await client.aio.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert err.value.code == 429 and err.value.status == "RESOURCE_EXHAUSTED"
    async with aiohttp.ClientSession() as s:
        await (await s.delete(f"{sim.url}/_sim/faults")).release()
    await add_fault(sim, model=GEMINI_MODEL, kind="error", status=503)
    with pytest.raises(errors.ServerError) as srv:
        await client.aio.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert srv.value.code == 503 and srv.value.status == "UNAVAILABLE"
    with pytest.raises(errors.ClientError) as nf:
        await client.aio.models.generate_content(model="gemini-nope", contents="hi")
    assert nf.value.code == 404 and nf.value.status == "NOT_FOUND"


async def test_key_in_query_and_blocking(sim: SimServer) -> None:
    url = f"{sim.url}/v1/models/{GEMINI_MODEL}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "[[sim:block]] bad"}]}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body) as r:
            assert r.status == 403 and (await r.json())["error"]["status"] == "PERMISSION_DENIED"
        async with s.post(url, json=body, params={"key": "k"}) as r:
            out = await r.json()
            assert out["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in out
        refuse = {"contents": [{"parts": [{"text": "[[sim:refuse]]"}]}]}
        async with s.post(url, json=refuse, params={"key": "k"}) as r:
            assert (await r.json())["candidates"][0]["finishReason"] == "SAFETY"
