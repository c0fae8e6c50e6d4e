"""aiobotocore's sagemaker-runtime client against the simulator, both payload formats."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, EventStreamError

from test_sim_support import SM_OPENAI, SM_TGI, add_fault, sim
from tiergate.sim.server import SimServer

__all__ = ["sim"]


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sagemaker-runtime",
        endpoint_url=sim.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDSIM",
        aws_secret_access_key="secret",
        config=AioConfig(retries={"total_max_attempts": 1}, read_timeout=5),
    ) as c:
        yield c


def _chat(text: str, **extra: Any) -> bytes:
    return json.dumps(
        {"messages": [{"role": "user", "content": text}], "max_tokens": 200, **extra}
    ).encode()


async def _payload(stream: Any) -> tuple[bytes, int]:
    parts = [e["PayloadPart"]["Bytes"] async for e in stream]
    return b"".join(parts), len(parts)


async def test_openai_messages_invoke(client: Any) -> None:
    r = await client.invoke_endpoint(
        EndpointName=SM_OPENAI, Body=_chat("Hello"), ContentType="application/json"
    )
    assert r["ContentType"] == "application/json" and r["InvokedProductionVariant"] == "AllTraffic"
    body = json.loads(await r["Body"].read())
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] > 0


async def test_openai_messages_stream(client: Any) -> None:
    whole = await client.invoke_endpoint(
        EndpointName=SM_OPENAI, Body=_chat("Hello"), ContentType="application/json"
    )
    expected = json.loads(await whole["Body"].read())["choices"][0]["message"]["content"]
    r = await client.invoke_endpoint_with_response_stream(
        EndpointName=SM_OPENAI, Body=_chat("Hello", stream=True), ContentType="application/json"
    )
    raw, n_parts = await _payload(r["Body"])
    events = [line[len("data: ") :] for line in raw.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"[len("data: ") :]
    chunks = [json.loads(e) for e in events[:-1]]
    assert n_parts > len(events)  # lines are split across PayloadParts
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == expected


async def test_tgi_invoke_and_stream(client: Any) -> None:
    prompt = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nName a colour<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    body = json.dumps(
        {"inputs": prompt, "parameters": {"max_new_tokens": 50, "details": True}}
    ).encode()
    r = await client.invoke_endpoint(EndpointName=SM_TGI, Body=body, ContentType="application/json")
    out = json.loads(await r["Body"].read())
    assert isinstance(out, list) and out[0]["generated_text"]
    assert out[0]["details"]["generated_tokens"] <= 50
    r = await client.invoke_endpoint_with_response_stream(
        EndpointName=SM_TGI, Body=body, ContentType="application/json"
    )
    raw, _ = await _payload(r["Body"])
    events = [json.loads(line[len("data:") :]) for line in raw.decode().split("\n\n") if line]
    assert "".join(e["token"]["text"] for e in events) == out[0]["generated_text"]
    assert events[-1]["generated_text"] == out[0]["generated_text"]
    assert all(e["generated_text"] is None for e in events[:-1])
    short = json.dumps(
        {"inputs": "Hi", "parameters": {"max_new_tokens": 2, "details": True}}
    ).encode()
    r = await client.invoke_endpoint(
        EndpointName=SM_TGI, Body=short, ContentType="application/json"
    )
    assert json.loads(await r["Body"].read())[0]["details"]["finish_reason"] == "length"


async def test_errors(sim: SimServer, client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationError):
        await client.invoke_endpoint(
            EndpointName="missing", Body=_chat("x"), ContentType="application/json"
        )
    await add_fault(sim, model=SM_OPENAI, kind="error", status=500, error_type="ModelError")
    with pytest.raises(client.exceptions.ModelError) as err:
        await client.invoke_endpoint(
            EndpointName=SM_OPENAI, Body=_chat("x"), ContentType="application/json"
        )
    assert err.value.response["OriginalStatusCode"] == 500
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424


async def test_throttling_and_stream_error(sim: SimServer, client: Any) -> None:
    fault = await add_fault(sim, model=SM_TGI, kind="ratelimit")
    body = json.dumps({"inputs": "Hi", "parameters": {}}).encode()
    with pytest.raises(ClientError) as err:
        await client.invoke_endpoint(EndpointName=SM_TGI, Body=body, ContentType="application/json")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert fault["status"] == 429
    await add_fault(sim, model=SM_OPENAI, kind="stream_error", status=500)
    r = await client.invoke_endpoint_with_response_stream(
        EndpointName=SM_OPENAI, Body=_chat("Hello", stream=True), ContentType="application/json"
    )
    with pytest.raises(EventStreamError) as se:
        await _payload(r["Body"])
    assert se.value.response["Error"]["Code"] == "ModelStreamError"
