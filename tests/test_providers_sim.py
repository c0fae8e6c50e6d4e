"""Every adapter against the simulators over real loopback HTTP (and SageMaker against
moto's server mode): text, tools with a result turn, JSON schema, streaming, and the
error classes the simulators' faults produce."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest

from tiergate.config import Config, DeploymentConfig, ProviderConfig, parse_config
from tiergate.envelope import ChatRequest, Message, ResponseFormat, TextPart, Tool, ToolCall
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers.base import Adapter, Completion, StreamEnd, StreamEvent
from tiergate.providers.normalise import StreamCollector
from tiergate.providers.registry import make_adapter
from tiergate.sim.server import SimServer, sim_config_for

FAST = {"ttft_ms": 2, "tokens_per_s": 20000, "sigma": 0}
CONFIG: dict[str, Any] = {
    "providers": {
        "openai": {"kind": "openai", "api_key": {"env": "TG_TEST_OPENAI_KEY"}},
        "compat": {
            "kind": "openai_compatible",
            "base_url": "http://placeholder",
            "api_key": {"env": "TG_TEST_OPENAI_KEY"},
        },
        "anthropic": {"kind": "anthropic", "api_key": {"env": "TG_TEST_ANTHROPIC_KEY"}},
        "gemini": {"kind": "gemini", "api_key": {"env": "TG_TEST_GEMINI_KEY"}},
        "bedrock": {
            "kind": "bedrock",
            "aws_access_key_id": {"env": "TG_TEST_AWS_ID"},
            "aws_secret_access_key": {"env": "TG_TEST_AWS_SECRET"},
        },
        "sagemaker": {
            "kind": "sagemaker",
            "aws_access_key_id": {"env": "TG_TEST_AWS_ID"},
            "aws_secret_access_key": {"env": "TG_TEST_AWS_SECRET"},
        },
    },
    "tiers": ["small"],
    "deployments": {
        "oa": {"provider": "openai", "model": "gpt-sim-2024-07-18"},
        "oc": {"provider": "compat", "model": "compat-sim"},
        "an": {"provider": "anthropic", "model": "claude-sim-20241022"},
        "ge": {"provider": "gemini", "model": "gemini-sim-002"},
        "br": {"provider": "bedrock", "model": "anthropic.claude-sim-v2:0"},
        "sm": {"provider": "sagemaker", "model": "sm-chat"},
        "tg": {"provider": "sagemaker", "model": "sm-tgi", "payload_format": "tgi"},
    },
    "sim": {"seed": 3},
}
for _d in CONFIG["deployments"].values():
    _d.update(tier="small", price={"input": 1.0, "output": 2.0})
CONFIG["sim"]["models"] = {d["model"]: FAST for d in CONFIG["deployments"].values()}

ALL = ["oa", "oc", "an", "ge", "br", "sm", "tg"]
TOOLED = ["oa", "oc", "an", "ge", "br", "sm"]  # tgi payloads carry no tools
HTTP_SSE = ["oa", "an", "ge"]

WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer", "confidence", "tags"],
    "additionalProperties": False,
}

Harness = tuple[SimServer, Config, Callable[[str], Awaitable[tuple[Adapter, DeploymentConfig]]]]


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    for var, value in {
        "TG_TEST_OPENAI_KEY": "sk-test-openai",
        "TG_TEST_ANTHROPIC_KEY": "sk-ant-test",
        "TG_TEST_GEMINI_KEY": "gemini-test-key",
        "TG_TEST_AWS_ID": "AKIDTESTTESTTEST",
        "TG_TEST_AWS_SECRET": "secret/test/test",
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    base = parse_config(CONFIG)
    sim = await SimServer.start(base, host="127.0.0.1", port=0)
    config = sim_config_for(base, sim.url)
    opened: list[Adapter] = []

    async def adapter(dep_name: str) -> tuple[Adapter, DeploymentConfig]:
        dep = config.deployments[dep_name]
        a = make_adapter(dep.provider, config.providers[dep.provider])
        await a.open()
        opened.append(a)
        return a, dep

    try:
        yield sim, config, adapter
    finally:
        for a in opened:
            await a.close()
        await sim.stop()


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(
        model="auto",
        messages=[
            Message("system", [TextPart("You are terse.")]),
            Message("user", [TextPart(text)]),
        ],
        **kw,
    )


async def drain(stream: AsyncIterator[StreamEvent]) -> tuple[StreamCollector, list[StreamEvent]]:
    collector = StreamCollector()
    events = []
    async for event in stream:
        events.append(event)
        collector.add(event)
    return collector, events


async def add_fault(sim: SimServer, **fault: Any) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{sim.url}/_sim/faults", json=fault) as r:
        assert r.status == 201, await r.text()


async def stats(sim: SimServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{sim.url}/_sim/stats") as r:
        result: dict[str, Any] = await r.json()
        return result


# ---------------------------------------------------------------- happy paths


@pytest.mark.parametrize("name", ALL)
async def test_text(harness: Harness, name: str) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    c = await a.complete(ask("Explain routing in one paragraph."), dep, 5.0)
    assert isinstance(c, Completion)
    assert c.text and c.finish_reason == "stop" and not c.tool_calls
    assert c.usage.output_tokens > 0
    if name != "tg":  # TGI reports no prompt token count
        assert c.usage.input_tokens > 0
    assert c.model
    assert (await stats(sim))[dep.model]["calls"] == 1


@pytest.mark.parametrize("name", ALL)
async def test_stream_text_matches_complete(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    whole = await a.complete(ask("Tell me about latency budgets."), dep, 5.0)
    collector, events = await drain(
        a.stream(ask("Tell me about latency budgets.", stream=True), dep, 5.0)
    )
    assert isinstance(events[-1], StreamEnd)
    assert sum(isinstance(e, StreamEnd) for e in events) == 1
    assert len(events) > 2  # really streamed in pieces
    assert collector.text == whole.text
    end = events[-1]
    assert end.finish_reason == "stop"
    assert end.usage.output_tokens == whole.usage.output_tokens
    assert end.usage.input_tokens == whole.usage.input_tokens


@pytest.mark.parametrize("name", TOOLED)
async def test_tools_then_result_turn(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    req = ask("What's the weather in Paris?", tools=[WEATHER], tool_choice="required")
    first = await a.complete(req, dep, 5.0)
    assert first.finish_reason == "tool_calls"
    assert [c.name for c in first.tool_calls] == ["get_weather"]
    call = first.tool_calls[0]
    assert call.id
    jsonschema.validate(orjson.loads(call.arguments), WEATHER.parameters)
    follow = ChatRequest(
        model="auto",
        messages=[
            *req.messages,
            Message("assistant", tool_calls=[ToolCall(call.id, call.name, call.arguments)]),
            Message("tool", [TextPart('{"temp_c": 21, "sky": "clear"}')], tool_call_id=call.id),
        ],
        tools=[WEATHER],
    )
    second = await a.complete(follow, dep, 5.0)
    assert second.finish_reason == "stop" and not second.tool_calls
    assert second.text and ("21" in second.text or "clear" in second.text)


@pytest.mark.parametrize("name", TOOLED)
async def test_stream_tool_call_deltas(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    req = ask("Weather in Rome please", tools=[WEATHER], tool_choice="required", stream=True)
    collector, events = await drain(a.stream(req, dep, 5.0))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_calls"
    calls = collector.tool_calls()
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].id
    jsonschema.validate(orjson.loads(calls[0].arguments), WEATHER.parameters)


# The simulator's TGI endpoint ignores `parameters.grammar`, so tgi is not asked for JSON.
@pytest.mark.parametrize("name", TOOLED)
async def test_json_schema(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    rf = ResponseFormat("json_schema", SCHEMA, "verdict", strict=True)
    c = await a.complete(ask("Judge this.", response_format=rf), dep, 5.0)
    assert c.finish_reason == "stop" and not c.tool_calls
    jsonschema.validate(orjson.loads(c.text or ""), SCHEMA)
    collector, events = await drain(
        a.stream(ask("Judge this.", response_format=rf, stream=True), dep, 5.0)
    )
    collector.validate(rf)
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "stop"


@pytest.mark.parametrize("name", ["oa", "ge", "sm"])
async def test_json_object(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    c = await a.complete(
        ask("Give me JSON.", response_format=ResponseFormat("json_object")), dep, 5.0
    )
    assert isinstance(orjson.loads(c.text or ""), dict)


@pytest.mark.parametrize("name", ["an", "br"])
async def test_json_object_by_instruction_is_checked(harness: Harness, name: str) -> None:
    """Anthropic and Bedrock have no JSON mode: the instruction asks for it and the
    answer is checked. The simulator answers such a request in prose, which must come
    back as invalid_output (retryable on a sibling), never as a success."""
    _, _, adapter = harness
    a, dep = await adapter(name)
    with pytest.raises(ProviderError) as info:
        await a.complete(
            ask("Give me JSON.", response_format=ResponseFormat("json_object")), dep, 5.0
        )
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT and info.value.retryable


@pytest.mark.parametrize("name", ["oa", "an", "ge", "br"])
async def test_refusal_and_block(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    refused = await a.complete(ask("[[sim:refuse]] do bad things"), dep, 5.0)
    assert refused.finish_reason == "content_filter" or refused.refusal
    blocked = await a.complete(ask("[[sim:block]] worse things"), dep, 5.0)
    assert blocked.finish_reason == "content_filter"


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("name", ALL)
async def test_rate_limited_with_retry_after(harness: Harness, name: str) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    await add_fault(sim, model=dep.model, kind="ratelimit", retry_after_s=7)
    with pytest.raises(ProviderError) as info:
        await a.complete(ask("hi"), dep, 5.0)
    err = info.value
    assert err.error_class is ErrorClass.RATE_LIMITED and err.retryable
    assert err.provider == dep.provider
    assert err.retry_after_s == pytest.approx(7.0)
    with pytest.raises(ProviderError) as info:
        await drain(a.stream(ask("hi", stream=True), dep, 5.0))
    assert info.value.error_class is ErrorClass.RATE_LIMITED


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("status", "classes"),
    [
        (503, {ErrorClass.OVERLOADED}),
        (500, {ErrorClass.SERVER_ERROR}),
        (529, {ErrorClass.OVERLOADED, ErrorClass.SERVER_ERROR}),
    ],
)
async def test_server_errors(
    harness: Harness, name: str, status: int, classes: set[ErrorClass]
) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    await add_fault(sim, model=dep.model, kind="error", status=status)
    with pytest.raises(ProviderError) as info:
        await a.complete(ask("hi"), dep, 5.0)
    assert info.value.error_class in classes and info.value.retryable


@pytest.mark.parametrize("name", ALL)
async def test_malformed(harness: Harness, name: str) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    await add_fault(sim, model=dep.model, kind="malformed")
    with pytest.raises(ProviderError) as info:
        await a.complete(ask("hi"), dep, 5.0)
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT and info.value.retryable
    with pytest.raises(ProviderError) as info:
        await drain(a.stream(ask("hi", stream=True), dep, 5.0))
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT


@pytest.mark.parametrize("name", ALL)
async def test_cut_stream_is_an_error_never_a_stream_end(harness: Harness, name: str) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    await add_fault(sim, model=dep.model, kind="cut")
    events: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in a.stream(
            ask("Tell me a long story [[sim:len=200]]", stream=True), dep, 5.0
        ):
            events.append(event)
    assert info.value.error_class is ErrorClass.SERVER_ERROR and info.value.retryable
    assert not any(isinstance(e, StreamEnd) for e in events)
    with pytest.raises(ProviderError) as info:
        await a.complete(ask("Tell me a long story [[sim:len=200]]"), dep, 5.0)
    assert info.value.retryable


@pytest.mark.parametrize("name", ALL)
async def test_stall_times_out(harness: Harness, name: str) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    await add_fault(sim, model=dep.model, kind="stall")
    with pytest.raises(ProviderError) as info:
        await a.complete(ask("hi"), dep, 0.3)
    assert info.value.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize("name", ALL)
async def test_stream_time_to_first_event_is_bounded(harness: Harness, name: str) -> None:
    sim, _, adapter = harness
    a, dep = await adapter(name)
    await add_fault(sim, model=dep.model, kind="latency", factor=1000)  # TTFT 2 ms -> 2 s
    with pytest.raises(ProviderError) as info:
        await drain(a.stream(ask("hi", stream=True), dep, 0.3))
    assert info.value.error_class is ErrorClass.TIMEOUT and info.value.provider == dep.provider


@pytest.mark.parametrize("name", HTTP_SSE)
async def test_consumer_can_stop_a_stream_early(harness: Harness, name: str) -> None:
    _, _, adapter = harness
    a, dep = await adapter(name)
    stream = a.stream(ask("A long answer [[sim:len=300]]", stream=True), dep, 5.0)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    # the pool is still usable afterwards
    c = await a.complete(ask("again"), dep, 5.0)
    assert c.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "bedrock", "sagemaker"])
async def test_connect_error(monkeypatch: pytest.MonkeyPatch, kind: Any) -> None:
    monkeypatch.setenv("TG_TEST_KEY", "k")
    url = f"http://127.0.0.1:{_free_port()}"
    creds = (
        {
            "aws_access_key_id": {"env": "TG_TEST_KEY"},
            "aws_secret_access_key": {"env": "TG_TEST_KEY"},
        }
        if kind in ("bedrock", "sagemaker")
        else {"api_key": {"env": "TG_TEST_KEY"}}
    )
    config = ProviderConfig.model_validate({"kind": kind, "base_url": url, **creds})
    dep = DeploymentConfig.model_validate(
        {"provider": "p", "model": "m", "tier": "t", "price": {"input": 1, "output": 1}}
    )
    a = make_adapter("p", config)
    await a.open()
    try:
        with pytest.raises(ProviderError) as info:
            await a.complete(ask("hi"), dep, 2.0)
        assert info.value.error_class is ErrorClass.CONNECT
        with pytest.raises(ProviderError) as info:
            await drain(a.stream(ask("hi", stream=True), dep, 2.0))
        assert info.value.error_class is ErrorClass.CONNECT
    finally:
        await a.close()


async def test_keys_go_only_to_their_provider(harness: Harness) -> None:
    _, _, adapter = harness
    secrets = {"sk-test-openai", "sk-ant-test", "gemini-test-key"}
    expected = {
        "oa": ("authorization", "Bearer sk-test-openai"),
        "an": ("x-api-key", "sk-ant-test"),
        "ge": ("x-goog-api-key", "gemini-test-key"),
    }
    for name, (header, value) in expected.items():
        a, dep = await adapter(name)
        assert (await a.complete(ask("hi"), dep, 5.0)).text
        assert not any(secret in repr(a) for secret in secrets)
        sent = {k.lower(): v for k, v in a._session.headers.items()}  # type: ignore[attr-defined]
        assert sent[header] == value
        own = value.removeprefix("Bearer ")
        others = secrets - {own}
        assert not any(other in v for v in sent.values() for other in others)


# ---------------------------------------------------------------- SageMaker on moto


@pytest.fixture
def moto_url() -> Any:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if server._server is not None:
            server._server.server_close()


@pytest.mark.parametrize("payload_format", ["openai_messages", "tgi"])
async def test_sagemaker_on_moto(
    monkeypatch: pytest.MonkeyPatch, moto_url: str, payload_format: str
) -> None:
    monkeypatch.setenv("TG_TEST_AWS_ID", "testing")
    monkeypatch.setenv("TG_TEST_AWS_SECRET", "testing")
    if payload_format == "tgi":
        body = [
            {
                "generated_text": "moto says hi",
                "details": {"finish_reason": "eos_token", "generated_tokens": 4},
            }
        ]
    else:
        body = {
            "id": "cmpl-moto",
            "model": "moto-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "moto says hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4},
        }
    results = {
        "results": [
            {
                "Body": orjson.dumps(body).decode(),
                "ContentType": "application/json",
                "InvokedProductionVariant": "AllTraffic",
                "CustomAttributes": "",
            }
        ]
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{moto_url}/moto-api/static/sagemaker/endpoint-results", json=results) as r,
    ):
        assert r.status == 201, await r.text()
    config = ProviderConfig.model_validate(
        {
            "kind": "sagemaker",
            "base_url": moto_url,
            "aws_access_key_id": {"env": "TG_TEST_AWS_ID"},
            "aws_secret_access_key": {"env": "TG_TEST_AWS_SECRET"},
        }
    )
    dep = DeploymentConfig.model_validate(
        {
            "provider": "sm",
            "model": "my-endpoint",
            "tier": "t",
            "price": {"input": 1, "output": 1},
            "payload_format": payload_format,
        }
    )
    a = make_adapter("sm", config)
    await a.open()
    try:
        c = await a.complete(ask("hi"), dep, 5.0)
    finally:
        await a.close()
    assert c.text == "moto says hi" and c.finish_reason == "stop"
    assert c.usage.output_tokens == 4
