"""The relayed stream path through the server (an OpenAI deployment streamed to the
OpenAI surface): byte for byte what the canonical-event path sends, and the same
terminal errors, replays and failover."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import Stack, fast_sim_config, left_mid_stream
from tiergate.providers.openai import OpenAIAdapter

DEP = "gpt-4o-mini"  # an `openai` deployment of examples/sim.yaml
WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(fast_sim_config(**getattr(request, "param", {})))
    yield s
    s.close()


def body(**extra: Any) -> dict[str, Any]:
    question = f"Explain routing briefly. {uuid.uuid4().hex}"
    messages = [{"role": "user", "content": question}]
    return {"model": DEP, "messages": messages, "max_tokens": 40, "stream": True, **extra}


def frames(data: bytes) -> list[Any]:
    out = []
    for frame in data.decode().split("\n\n"):
        if frame:
            payload = frame.removeprefix("data: ")
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


_IDS = re.compile(rb'"id":"chatcmpl-[0-9a-f]+","object":"chat\.completion\.chunk","created":\d+')


def _anonymous(data: bytes) -> bytes:
    return _IDS.sub(b'"id":"-","object":"chat.completion.chunk","created":0', data)


@pytest.mark.parametrize(
    "extra",
    [
        {"stream_options": {"include_usage": True}},
        {},
        {"tools": [{"type": "function", "function": WEATHER}], "tool_choice": "required"},
    ],
)
def test_relay_sends_what_the_event_path_sends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any]
) -> None:
    req = body(**extra)
    relayed = stack.post("/v1/chat/completions", req, {"idempotency-key": "a"})
    monkeypatch.delattr(OpenAIAdapter, "relay")  # the dispatcher falls back to events
    evented = stack.post("/v1/chat/completions", req, {"idempotency-key": "b"})
    assert relayed.status == evented.status == 200
    assert "x-tiergate-replay" not in evented.headers
    assert relayed.data.endswith(b"data: [DONE]\n\n")
    assert _anonymous(relayed.data) == _anonymous(evented.data)
    assert stack.calls(DEP) == 2


def test_relayed_replay_is_identical(stack: Stack) -> None:
    req = body(stream_options={"include_usage": True})
    first = stack.post("/v1/chat/completions", req)
    second = stack.post("/v1/chat/completions", req)
    assert second.headers["x-tiergate-replay"] == "true"
    assert second.data == first.data and first.data.endswith(b"data: [DONE]\n\n")
    assert stack.calls(DEP) == 1


# Faults that end a relayed stream midway, and the message its terminal error carries.
MIDWAY_FAULTS = [
    ("cut", "stream ended before completion"),
    ("malformed", "malformed stream chunk (not JSON)"),
    ("stream_error", "server_error in stream: "),
]


@pytest.mark.parametrize(("fault", "message"), MIDWAY_FAULTS)
def test_a_relayed_stream_failing_midway_ends_with_a_terminal_error(
    stack: Stack, fault: str, message: str
) -> None:
    stack.fault(DEP, fault)
    resp = stack.post("/v1/chat/completions", body(max_tokens=200))
    assert resp.status == 200 and resp.headers["x-tiergate-deployment"] == DEP
    sent = frames(resp.data)
    assert "[DONE]" not in sent and sent[1]["choices"][0]["delta"]["content"]
    assert sent[-1]["error"]["code"] == "stream_interrupted"
    assert sent[-1]["error"]["message"].startswith(message)


@pytest.mark.parametrize("stack", [{"inter_chunk_timeout_s": 0.5}], indirect=True)
def test_a_stalled_relayed_stream_ends_with_a_terminal_error(stack: Stack) -> None:
    stack.fault(DEP, "stall")
    resp = stack.post("/v1/chat/completions", body(max_tokens=200))
    assert b"[DONE]" not in resp.data and b'"stream_stalled"' in resp.data


def test_a_relayed_stream_fails_over_before_the_first_byte(stack: Stack) -> None:
    stack.fault(DEP, "error", status=503)
    resp = stack.post("/v1/chat/completions", body())
    assert resp.status == 200
    assert resp.headers["x-tiergate-deployment"] != DEP
    assert resp.data.endswith(b"data: [DONE]\n\n")


def test_a_caller_leaving_a_relayed_stream_is_billed_what_it_was_sent(tmp_path: Path) -> None:
    # The caller hangs up mid-stream: the attempt is cancelled (not the deployment's
    # fault), billed as the prompt estimate plus the text pieces already delivered.
    config = fast_sim_config()
    log = tmp_path / "requests.jsonl"
    telemetry = config.telemetry.model_copy(update={"log": str(log), "safety_log": None})
    stack = Stack(config.model_copy(update={"telemetry": telemetry}))
    try:
        stack.fault(DEP, "latency", factor=100)  # slow: the caller leaves before the end
        # The role chunk and two text pieces, then the caller hangs up.
        line = left_mid_stream(stack, log, DEP, body(max_tokens=300), 3)
        (attempt,) = line["attempts"]
        assert attempt["input_tokens"] > 0 and attempt["output_tokens"] >= 2
        assert attempt["ttft_ms"] > 0 and line["cost_usd"] == attempt["cost_usd"] > 0
    finally:
        stack.close()
