"""Streamed tool calls as providers send them and SDKs need them: OpenAI-compatible
servers that leave out each delta's ``index`` (Ollama, Gemini's compatible API) or send
it null (SGLang, mistral.rs) have each delta placed in its call, so the official SDKs'
stream helpers, which need the index, assemble the calls the server meant, on either
surface; a call id sent as a number reaches the caller as its text; a tool without parameters, whose input Anthropic streams as nothing, reaches
an OpenAI caller with ``{}`` as its arguments (valid JSON, as OpenAI sends it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from harness import sidecar_before

CONFIG = """
providers:
  local: {kind: openai_compatible, base_url: "http://127.0.0.1:PORT/v1", api_key: {env: TOOL_INDEX_KEY}}
  claude: {kind: anthropic, base_url: "http://127.0.0.1:PORT", api_key: {env: TOOL_INDEX_KEY}}
tiers: [one]
deployments:
  d: {provider: local, model: m-local, tier: one, price: {input: 1, output: 2}}
  da: {provider: claude, model: m-claude, tier: one, price: {input: 1, output: 2}}
routes:
  r: {deployment: d}
  ra: {deployment: da}
telemetry: {log: null}
"""


def _event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": "u", "object": "chat.completion.chunk", "model": "m-local"}
    body["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    )
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _end() -> bytes:
    usage = {"prompt_tokens": 9, "completion_tokens": 4}
    return _event({}, "tool_calls") + _event(None, usage=usage) + b"data: [DONE]\n\n"


# Ollama: whole calls, both in one event, with ids and no index.
WHOLE = (
    _event({"role": "assistant", "content": ""})
    + _event(
        {
            "tool_calls": [
                {"id": "call_a", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
                {"id": "call_b", "function": {"name": "time", "arguments": '{"zone": "CET"}'}},
            ]
        }
    )
    + _end()
)

# SGLang-like: a call opens with its id and name, its arguments follow in pieces whose
# index is null and that carry no id; then a second call the same way.
PIECES = (
    _event({"role": "assistant", "content": ""})
    + _event({"tool_calls": [{"index": None, "id": "call_a", "function": {"name": "weather"}}]})
    + _event({"tool_calls": [{"index": None, "function": {"arguments": '{"city": '}}]})
    + _event({"tool_calls": [{"index": None, "function": {"arguments": '"Oslo"}'}}]})
    + _event({"tool_calls": [{"index": None, "id": "call_b", "function": {"name": "time"}}]})
    + _event({"tool_calls": [{"index": None, "function": {"arguments": '{"zone": "CET"}'}}]})
    + _end()
)

EXPECTED = [("call_a", "weather", {"city": "Oslo"}), ("call_b", "time", {"zone": "CET"})]


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


# Anthropic's stream of a call to a tool without parameters: an empty input delta.
NO_INPUT = b"".join(
    [
        _sse(
            "message_start",
            {
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "m-claude",
                    "stop_reason": None,
                    "usage": {"input_tokens": 30, "output_tokens": 1},
                }
            },
        ),
        _sse(
            "content_block_start",
            {
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}},
            },
        ),
        _sse(
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
        ),
        _sse("content_block_stop", {"index": 0}),
        _sse(
            "message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}
        ),
        _sse("message_stop", {}),
    ]
)


class Upstream:
    def __init__(self) -> None:
        self.wire = WHOLE

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(NO_INPUT if request.path.endswith("/messages") else self.wire)
        await resp.write_eof()
        return resp


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Upstream]]:
    os.environ.setdefault("TOOL_INDEX_KEY", "k")
    up = Upstream()
    with sidecar_before(up.handle, CONFIG, tmp_path_factory.mktemp("tool-index")) as url:
        yield url, up


def _tool(name: str, param: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {param: {"type": "string"}}, "required": [param]}
    return {"name": name, "description": f"the {name}", "parameters": schema}


TOOLS = [_tool("weather", "city"), _tool("time", "zone")]


def _openai_final(url: str, route: str, question: str, tools: list[dict[str, Any]]) -> Any:
    """The completion the OpenAI SDK's stream helper assembles for ``question``."""
    with (
        openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client,
        client.chat.completions.stream(
            model=route,
            messages=[{"role": "user", "content": question}],
            tools=[{"type": "function", "function": t} for t in tools],
        ) as stream,
    ):
        return stream.get_final_completion()


@pytest.mark.parametrize("wire", [WHOLE, PIECES], ids=["whole-calls", "pieces"])
def test_the_openai_stream_helper_assembles_each_call(
    served: tuple[str, Upstream], wire: bytes
) -> None:
    url, up = served
    up.wire = wire
    final = _openai_final(url, "r", "Weather and time in Oslo?", TOOLS)
    message = final.choices[0].message
    calls = message.tool_calls or []
    got = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls]
    assert got == EXPECTED
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("wire", [WHOLE, PIECES], ids=["whole-calls", "pieces"])
def test_the_anthropic_stream_helper_gets_one_block_a_call(
    served: tuple[str, Upstream], wire: bytes
) -> None:
    url, up = served
    up.wire = wire
    with (
        anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as client,
        client.messages.stream(
            model="r",
            max_tokens=100,
            messages=[{"role": "user", "content": "Weather and time in Oslo?"}],
            tools=[
                {
                    "name": t["name"],
                    "description": t["description"],
                    "input_schema": t["parameters"],
                }
                for t in TOOLS
            ],
        ) as stream,
    ):
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(b.id, b.name, b.input) for b in uses] == EXPECTED
    assert final.stop_reason == "tool_use"


def test_numeric_call_ids_reach_the_caller_as_text(served: tuple[str, Upstream]) -> None:
    """Some compatible servers number their calls: the ids the SDK gets are strings."""
    url, up = served
    up.wire = WHOLE.replace(b'"call_a"', b"7").replace(b'"call_b"', b"8")
    final = _openai_final(url, "r", "Weather and time in Oslo, numbered?", TOOLS)
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [("7", "weather"), ("8", "time")]


def test_a_tool_without_parameters_has_empty_object_arguments(
    served: tuple[str, Upstream],
) -> None:
    url, _ = served
    now = {"name": "now", "description": "the time", "parameters": {"type": "object"}}
    final = _openai_final(url, "ra", "What time is it?", [now])
    calls = final.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("toolu_1", "now", "{}")
    ]
