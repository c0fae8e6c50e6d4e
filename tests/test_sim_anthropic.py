"""The Anthropic SDK against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import jsonschema
import pytest

from test_sim_support import ANTHROPIC_MODEL, add_fault, sim
from tiergate.sim.server import SimServer

__all__ = ["sim"]

TOOL = {
    "name": "lookup_order",
    "description": "Find an order",
    "input_schema": {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "format": "uuid"},
            "include_items": {"type": "boolean"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        "required": ["order_id"],
    },
}


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = anthropic.AsyncAnthropic(base_url=sim.url, api_key="x", max_retries=0, timeout=5)
    try:
        yield c
    finally:
        await c.close()


async def test_text_with_system(client: anthropic.AsyncAnthropic) -> None:
    m = await client.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=200,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Tell me about tiers"}]}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    assert m.usage.cache_read_input_tokens == 0


async def test_max_tokens_and_stop_sequence(client: anthropic.AsyncAnthropic) -> None:
    msgs: list = [{"role": "user", "content": "A long story please"}]
    m = await client.messages.create(model=ANTHROPIC_MODEL, max_tokens=2, messages=msgs)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 2
    full = await client.messages.create(model=ANTHROPIC_MODEL, max_tokens=500, messages=msgs)
    text = full.content[0].text  # type: ignore[union-attr]
    word = text.split()[5]
    cut = await client.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=500, messages=msgs, stop_sequences=[word]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert text.startswith(cut.content[0].text)  # type: ignore[union-attr]


async def test_stream_final_message(client: anthropic.AsyncAnthropic) -> None:
    msgs: list = [{"role": "user", "content": "Stream a short answer"}]
    whole = await client.messages.create(model=ANTHROPIC_MODEL, max_tokens=300, messages=msgs)
    async with client.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=300, messages=msgs
    ) as stream:
        events = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert events[0] == "message_start" and events[-1] == "message_stop"


async def test_tool_use_any_and_stream(client: anthropic.AsyncAnthropic) -> None:
    msgs: list = [{"role": "user", "content": "Where is my parcel?"}]
    m = await client.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=300,
        messages=msgs,
        tools=[TOOL],
        tool_choice={"type": "any"},
    )
    assert m.stop_reason == "tool_use"
    block = m.content[-1]
    assert (
        block.type == "tool_use" and block.name == "lookup_order" and block.id.startswith("toolu_")
    )
    jsonschema.validate(
        block.input, TOOL["input_schema"], format_checker=jsonschema.FormatChecker()
    )
    async with client.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=300,
        messages=msgs,
        tools=[TOOL],
        tool_choice={"type": "any"},
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[-1].type == "tool_use"
    assert final.content[-1].input == block.input  # deterministic, streamed or not
    named = await client.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=300,
        messages=msgs,
        tools=[TOOL],
        tool_choice={"type": "tool", "name": "lookup_order"},
    )
    assert named.content[-1].type == "tool_use" and named.stop_reason == "tool_use"


async def test_tool_result_turn(client: anthropic.AsyncAnthropic) -> None:
    m = await client.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=300,
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "status of lookup_order 42?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup_order",
                        "input": {"order_id": "42"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "shipped yesterday",
                    }
                ],
            },
        ],
    )
    assert m.stop_reason == "end_turn"
    assert "shipped yesterday" in m.content[0].text  # type: ignore[union-attr]


async def test_overloaded_and_rate_limited(
    sim: SimServer, client: anthropic.AsyncAnthropic
) -> None:
    fault = await add_fault(sim, model=ANTHROPIC_MODEL, kind="error", status=529)
    with pytest.raises(anthropic.InternalServerError) as err:
        await client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 529
    assert err.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded (simulated)."},
        "request_id": "req_sim",
    }
    assert fault["kind"] == "error"
    async with aiohttp.ClientSession() as s, s.delete(f"{sim.url}/_sim/faults") as r:
        assert (await r.json())["cleared"] == 1
    await add_fault(sim, model=ANTHROPIC_MODEL, kind="ratelimit", retry_after_s=3)
    with pytest.raises(anthropic.RateLimitError) as rl:
        await client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert rl.value.response.headers["retry-after"] == "3"


async def test_auth_and_version_required(sim: SimServer) -> None:
    body = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{sim.url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"
        async with s.post(f"{sim.url}/v1/messages", json=body, headers={"x-api-key": "k"}) as r:
            assert r.status == 400
        async with s.post(
            f"{sim.url}/v1/messages",
            json={**body, "model": "nope"},
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        ) as r:
            assert r.status == 404 and (await r.json())["error"]["type"] == "not_found_error"
