"""Fault injection, rate limits and the control endpoints, over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from test_sim_support import (
    ANTHROPIC_MODEL,
    GEMINI_MODEL,
    OPENAI_MODEL,
    add_fault,
    sim,
    sim_config,
    stats,
)
from tiergate.sim.server import SimServer

__all__ = ["sim"]

HEADERS = {"Authorization": "Bearer x"}


def _chat(stream: bool = False, model: str = OPENAI_MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story [[sim:len=40]]"}],
        "stream": stream,
    }


async def _post(server: SimServer, body: dict[str, Any], timeout: float = 5) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
        s.post(f"{server.url}/v1/chat/completions", json=body, headers=HEADERS) as r,
    ):
        return r.status, await r.read()


async def _clear(server: SimServer) -> None:
    async with aiohttp.ClientSession() as s, s.delete(f"{server.url}/_sim/faults") as r:
        assert r.status == 200


async def test_control_validation_and_listing(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{sim.url}/_sim/faults", json={"model": OPENAI_MODEL, "kind": "boom"}
        ) as r:
            assert r.status == 400 and "kind" in (await r.json())["error"]
        async with s.post(f"{sim.url}/_sim/faults", json={"model": "nope", "kind": "error"}) as r:
            assert r.status == 404
        async with s.post(
            f"{sim.url}/_sim/faults", json={"model": OPENAI_MODEL, "kind": "error", "rate": 2}
        ) as r:
            assert r.status == 400
    f = await add_fault(sim, model=OPENAI_MODEL, kind="error")
    assert (f["rate"], f["status"], f["factor"], f["retry_after_s"], f["duration_s"]) == (
        1.0,
        503,
        5.0,
        1.0,
        None,
    )
    await add_fault(sim, model="*", kind="latency", factor=1.0)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim.url}/_sim/faults") as r:
            listed = await r.json()
        assert [x["kind"] for x in listed] == ["error", "latency"]
        async with s.delete(f"{sim.url}/_sim/faults", params={"model": OPENAI_MODEL}) as r:
            assert (await r.json())["cleared"] == 1
        async with s.get(f"{sim.url}/_sim/faults") as r:
            assert [x["model"] for x in await r.json()] == ["*"]


async def test_error_rate_and_duration(sim: SimServer) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="error", rate=0.5, status=502)
    statuses = [(await _post(sim, _chat()))[0] for _ in range(20)]
    assert set(statuses) == {200, 502}
    await _clear(sim)
    await add_fault(sim, model=OPENAI_MODEL, kind="error", duration_s=0.2)
    assert (await _post(sim, _chat()))[0] == 503
    await asyncio.sleep(0.25)
    assert (await _post(sim, _chat()))[0] == 200


async def test_latency_factor(sim: SimServer) -> None:
    t0 = time.monotonic()
    await _post(sim, _chat())
    fast = time.monotonic() - t0
    await add_fault(sim, model=OPENAI_MODEL, kind="latency", factor=60)  # ttft 5 ms -> 300 ms
    t0 = time.monotonic()
    status, _ = await _post(sim, _chat())
    slow = time.monotonic() - t0
    assert status == 200 and slow > 0.28 and slow > fast * 3


async def test_stall_streaming_until_client_gives_up(sim: SimServer) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="stall")
    async with openai.AsyncOpenAI(
        base_url=f"{sim.url}/v1", api_key="x", max_retries=0, timeout=0.5
    ) as c:
        stream = await c.chat.completions.create(**_chat(stream=True))
        got = []
        t0 = time.monotonic()
        with pytest.raises((openai.APITimeoutError, httpx2.ReadTimeout)):
            async for chunk in stream:
                got.append(chunk)
        assert got and time.monotonic() - t0 < 2
        await stream.close()
    for _ in range(40):  # the server notices the disconnect and counts an error
        if (await stats(sim))[OPENAI_MODEL]["errors"] == 1:
            break
        await asyncio.sleep(0.05)
    assert (await stats(sim))[OPENAI_MODEL]["errors"] == 1


async def test_stall_unary(sim: SimServer) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="stall")
    with pytest.raises(TimeoutError):
        await _post(sim, _chat(), timeout=0.3)


async def test_cut_stream_and_body(sim: SimServer) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="cut")
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{sim.url}/v1/chat/completions", json=_chat(True), headers=HEADERS) as r,
        ):
            assert r.status == 200
            async for piece in r.content.iter_any():
                received += piece
    assert (
        b"data: {" in received
        and b"[DONE]" not in received
        and b'finish_reason":"stop' not in received
    )
    with pytest.raises(aiohttp.ClientPayloadError):
        await _post(sim, _chat())
    await add_fault(sim, model=ANTHROPIC_MODEL, kind="cut")
    async with anthropic.AsyncAnthropic(
        base_url=sim.url, api_key="x", max_retries=0, timeout=5
    ) as c:
        with pytest.raises((anthropic.APIError, httpx2.HTTPError)):
            async with c.messages.stream(
                model=ANTHROPIC_MODEL,
                max_tokens=100,
                messages=[{"role": "user", "content": "x [[sim:len=30]]"}],
            ) as stream:
                await stream.get_final_message()


async def test_malformed(sim: SimServer) -> None:
    await add_fault(sim, model=OPENAI_MODEL, kind="malformed")
    status, body = await _post(sim, _chat())
    assert status == 200
    with pytest.raises(ValueError):
        __import__("json").loads(body)
    status, body = await _post(sim, _chat(stream=True))
    events = [e for e in body.decode().split("\n\n") if e]
    bad = []
    for e in events:
        try:
            __import__("json").loads(e.removeprefix("data: "))
        except ValueError:
            bad.append(e)
    assert len(bad) == 1 and not body.endswith(b"[DONE]\n\n")
    st = (await stats(sim))[OPENAI_MODEL]
    assert st["calls"] == 2 and st["errors"] == 2 and st["output_tokens"] == 0


async def test_stream_error_events(sim: SimServer) -> None:
    await add_fault(sim, model=ANTHROPIC_MODEL, kind="stream_error", status=529)
    async with anthropic.AsyncAnthropic(
        base_url=sim.url, api_key="x", max_retries=0, timeout=5
    ) as c:
        with pytest.raises(anthropic.APIStatusError) as err:
            async with c.messages.stream(
                model=ANTHROPIC_MODEL,
                max_tokens=100,
                messages=[{"role": "user", "content": "x [[sim:len=30]]"}],
            ) as stream:
                await stream.get_final_message()
        assert "overloaded_error" in str(err.value.body)
    await add_fault(sim, model=OPENAI_MODEL, kind="stream_error", status=500)
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0) as oc:
        stream = await oc.chat.completions.create(**_chat(stream=True))
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_rpm_limit() -> None:
    config = sim_config(models={GEMINI_MODEL: {"ttft_ms": 1, "tokens_per_s": 5000, "rpm": 2}})
    server = await SimServer.start(config, port=0)
    try:
        url = f"{server.url}/v1beta/models/{GEMINI_MODEL}:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        codes = []
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.post(url, json=body, headers={"x-goog-api-key": "k"}) as r:
                    codes.append(r.status)
                    retry = r.headers.get("Retry-After")
                    payload = await r.json()
        assert codes == [200, 200, 429]
        assert retry is not None and 55 < float(retry) <= 60
        assert payload["error"]["status"] == "RESOURCE_EXHAUSTED"
        st = (await stats(server))[GEMINI_MODEL]
        assert (st["calls"], st["errors"], st["rate_limited"]) == (3, 1, 1)
    finally:
        await server.stop()


async def test_stats_accounting(sim: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0) as c:
        usage_in = usage_out = 0
        for text in ("one", "two two", "three three three"):
            r = await c.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": text}]
            )
            assert r.usage is not None
            usage_in += r.usage.prompt_tokens
            usage_out += r.usage.completion_tokens
    st = (await stats(sim))[OPENAI_MODEL]
    assert {"calls", "input_tokens", "output_tokens", "cost_usd"} <= set(st)
    assert (st["calls"], st["input_tokens"], st["output_tokens"]) == (3, usage_in, usage_out)
    assert st["cost_usd"] == pytest.approx((usage_in * 1.0 + usage_out * 2.0) / 1e6)
    assert st["by_protocol"] == {"openai": 3} and st["errors"] == 0
    async with aiohttp.ClientSession() as s, s.delete(f"{sim.url}/_sim/stats") as r:
        assert (await r.json())[OPENAI_MODEL]["calls"] == 0


async def test_stop_ends_a_stall_promptly() -> None:
    server = await SimServer.start(sim_config(), port=0)
    await add_fault(server, model=OPENAI_MODEL, kind="stall")
    task = asyncio.create_task(_post(server, _chat(stream=True), timeout=30))
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    await server.stop()
    assert time.monotonic() - t0 < 3
    with pytest.raises(aiohttp.ClientError):
        await task
