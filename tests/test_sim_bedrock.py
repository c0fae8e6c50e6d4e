"""aiobotocore's bedrock-runtime client against the simulator (incl. event-stream framing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from test_sim_support import BEDROCK_MODEL, add_fault, sim
from tiergate.sim import eventstream
from tiergate.sim.server import SimServer

__all__ = ["sim"]

SCHEMA = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
    "required": ["sku", "qty"],
}
TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "reserve",
                "description": "Reserve stock",
                "inputSchema": {"json": SCHEMA},
            }
        }
    ],
    "toolChoice": {"any": {}},
}


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "bedrock-runtime",
        endpoint_url=sim.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDSIM",
        aws_secret_access_key="secret",
        config=AioConfig(retries={"total_max_attempts": 1}, read_timeout=5),
    ) as c:
        yield c


def _msgs(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_eventstream_frames_decode_with_botocore() -> None:
    raw = eventstream.event("messageStop", b'{"stopReason":"end_turn"}') + eventstream.exception(
        "throttlingException", b'{"message":"slow down"}'
    )
    assert eventstream.decode(raw)[0][0][":event-type"] == "messageStop"
    buf = EventStreamBuffer()
    buf.add_data(raw)
    msgs = list(buf)
    assert (
        msgs[0].headers[":message-type"] == "event"
        and msgs[0].payload == b'{"stopReason":"end_turn"}'
    )
    assert msgs[1].headers[":exception-type"] == "throttlingException"
    corrupt = bytearray(raw)
    corrupt[20] ^= 0xFF
    with pytest.raises(ValueError):
        eventstream.decode(bytes(corrupt))


async def test_converse_text(client: Any) -> None:
    r = await client.converse(
        modelId=BEDROCK_MODEL,
        messages=_msgs("Tell me something"),
        system=[{"text": "Be helpful"}],
        inferenceConfig={"maxTokens": 500, "temperature": 0.2},
    )
    assert r["output"]["message"]["role"] == "assistant"
    assert r["output"]["message"]["content"][0]["text"]
    assert r["stopReason"] in ("end_turn", "max_tokens")
    u = r["usage"]
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert r["metrics"]["latencyMs"] >= 0
    short = await client.converse(
        modelId=BEDROCK_MODEL, messages=_msgs("x"), inferenceConfig={"maxTokens": 1}
    )
    assert short["stopReason"] == "max_tokens" and short["usage"]["outputTokens"] == 1


async def test_converse_tool_use_and_result(client: Any) -> None:
    r = await client.converse(
        modelId=BEDROCK_MODEL, messages=_msgs("Reserve two"), toolConfig=TOOLS
    )
    assert r["stopReason"] == "tool_use"
    use = r["output"]["message"]["content"][0]["toolUse"]
    assert use["name"] == "reserve"
    jsonschema.validate(use["input"], SCHEMA)
    follow = await client.converse(
        modelId=BEDROCK_MODEL,
        messages=[
            *_msgs("Reserve two"),
            {"role": "assistant", "content": [{"toolUse": use}]},
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": use["toolUseId"],
                            "content": [{"json": {"reserved": 2}}],
                        }
                    }
                ],
            },
        ],
        toolConfig={"tools": TOOLS["tools"]},
    )
    assert follow["stopReason"] == "end_turn"
    assert '"reserved":2' in follow["output"]["message"]["content"][0]["text"]


async def _collect(stream: Any) -> list[dict[str, Any]]:
    return [event async for event in stream]


async def test_converse_stream_text_and_tool(client: Any) -> None:
    whole = await client.converse(modelId=BEDROCK_MODEL, messages=_msgs("Stream please"))
    r = await client.converse_stream(modelId=BEDROCK_MODEL, messages=_msgs("Stream please"))
    events = await _collect(r["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == whole["output"]["message"]["content"][0]["text"]
    assert events[-1]["metadata"]["usage"]["outputTokens"] == whole["usage"]["outputTokens"]

    r = await client.converse_stream(
        modelId=BEDROCK_MODEL, messages=_msgs("Reserve two"), toolConfig=TOOLS
    )
    events = await _collect(r["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "reserve"
    args = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    )
    jsonschema.validate(__import__("json").loads(args), SCHEMA)
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


async def test_throttling_and_other_errors(sim: SimServer, client: Any) -> None:
    await add_fault(sim, model=BEDROCK_MODEL, kind="ratelimit")
    with pytest.raises(ClientError) as err:
        await client.converse(modelId=BEDROCK_MODEL, messages=_msgs("hi"))
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    with pytest.raises(client.exceptions.ThrottlingException):
        await client.converse_stream(modelId=BEDROCK_MODEL, messages=_msgs("hi"))
    async with aiohttp.ClientSession() as s:
        await (await s.delete(f"{sim.url}/_sim/faults")).release()
    await add_fault(
        sim, model=BEDROCK_MODEL, kind="error", status=429, error_type="ModelNotReadyException"
    )
    with pytest.raises(client.exceptions.ModelNotReadyException):
        await client.converse(modelId=BEDROCK_MODEL, messages=_msgs("hi"))
    async with aiohttp.ClientSession() as s:
        await (await s.delete(f"{sim.url}/_sim/faults")).release()
    for status, code in (
        (503, "ServiceUnavailableException"),
        (408, "ModelTimeoutException"),
        (500, "InternalServerException"),
    ):
        fault = await add_fault(sim, model=BEDROCK_MODEL, kind="error", status=status)
        with pytest.raises(ClientError) as err:
            await client.converse(modelId=BEDROCK_MODEL, messages=_msgs("hi"))
        assert err.value.response["Error"]["Code"] == code
        async with aiohttp.ClientSession() as s:
            await (await s.delete(f"{sim.url}/_sim/faults")).release()
        assert fault["status"] == status
    with pytest.raises(client.exceptions.ValidationException):
        await client.converse(modelId="no.such-model-v1:0", messages=_msgs("hi"))


async def test_unsigned_request_is_refused(sim: SimServer) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{sim.url}/model/{BEDROCK_MODEL}/converse", json={"messages": _msgs("x")}) as r,
    ):
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")


async def test_malformed_event_reaches_the_client_unparsed(sim: SimServer, client: Any) -> None:
    await add_fault(sim, model=BEDROCK_MODEL, kind="malformed")
    r = await client.converse_stream(modelId=BEDROCK_MODEL, messages=_msgs("Stream please"))
    events = await _collect(r["stream"])
    # botocore maps an unparseable payload to {"message": body}: the delta is missing and
    # the stream ends without messageStop — what an adapter must treat as malformed.
    assert "delta" not in events[-1]["contentBlockDelta"]
    assert not any("messageStop" in e for e in events)


async def test_mid_stream_error_is_an_exception_frame(sim: SimServer, client: Any) -> None:
    await add_fault(sim, model=BEDROCK_MODEL, kind="stream_error", status=429)
    r = await client.converse_stream(modelId=BEDROCK_MODEL, messages=_msgs("Stream please"))
    seen = []
    with pytest.raises(EventStreamError) as err:
        async for event in r["stream"]:
            seen.append(event)
    assert seen and "messageStart" in seen[0]
    assert err.value.response["Error"]["Code"] == "throttlingException"
