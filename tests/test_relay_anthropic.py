"""The core relay writing the Anthropic surface's stream (an OpenAI deployment streamed
to ``POST /v1/messages``): byte for byte what ``OpenAIStreamParser`` and
``AnthropicStreamRenderer`` send for the same body, through the server too, with the
same terminal errors and replays."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import Stack, fast_sim_config
from test_relay import Outcome, through_parser, through_relay, wires
from test_relay_server import DEP, MIDWAY_FAULTS, body  # a streamed question to DEP
from tiergate import _core
from tiergate.providers.openai import OpenAIAdapter
from tiergate.server.render_anthropic import AnthropicStreamRenderer


def reference(chunks: list[bytes]) -> Outcome:
    """The canonical-event path: the Python parser, then the Python renderer."""
    return through_parser(chunks, AnthropicStreamRenderer("msg_x", "dep-model"))


def relayed(chunks: list[bytes]) -> Outcome:
    relay = _core.OpenAIRelay("dep-model")
    relay.begin_anthropic("msg_x", "dep-model")
    return through_relay(chunks, relay)


# Any body (text, tool calls, refusals, usage or none, every finish reason, failures),
# split anywhere: the same frames, text, counts, end and error.
@settings(max_examples=500, deadline=None)
@given(wires())
def test_anthropic_relay_matches_the_python_stream_path(chunks: list[bytes]) -> None:
    assert relayed(chunks) == reference(chunks)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice: dict[str, Any] = {"index": 0, "delta": delta}
    if finish is not None:
        choice["finish_reason"] = finish
    return "data: " + json.dumps({"id": "u", "model": "m-9", "choices": [choice]}) + "\n\n"


texts = st.text(min_size=1, max_size=6)


@st.composite
def text_streams(draw: st.DrawFn) -> list[bytes]:
    """The usual answer: text deltas, a finish reason, usage or not, then [DONE] or the
    body's end, cut at any byte (inside a UTF-8 character too)."""
    parts = [_chunk({"role": "assistant", "content": ""})]
    parts += [_chunk({"content": t}) for t in draw(st.lists(texts, max_size=6))]
    parts.append(_chunk({}, draw(st.sampled_from(["stop", "length", "content_filter", "x"]))))
    if draw(st.booleans()):
        usage = {"prompt_tokens": draw(st.integers(0, 99)), "completion_tokens": 3}
        if draw(st.booleans()):
            usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, 150))}
        parts.append("data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n")
    if draw(st.booleans()):
        parts.append("data: [DONE]\n\n")
    wire = "".join(parts).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(text_streams())
def test_anthropic_relay_of_text_streams(chunks: list[bytes]) -> None:
    expected = reference(chunks)
    assert relayed(chunks) == expected
    assert expected[4] is not None or expected[0].endswith(b'data: {"type":"message_stop"}\n\n')


def test_begin_anthropic_replaces_begin() -> None:
    relay = _core.OpenAIRelay("m")
    relay.begin_anthropic("msg_\u2028", "m\n")
    relay.feed(_chunk({"content": "hi"}, "stop").encode() + b"data: [DONE]\n\n")
    out = relay.render(None)
    assert out.startswith(b"event: message_start\n")
    assert b'"id":"msg_\xe2\x80\xa8","type":"message","role":"assistant","model":"m\\n"' in out
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert relay.ended and relay.end == ("stop", 0, 0, 0, 0, "m-9")


@pytest.mark.parametrize(
    "delta", [{"tool_calls": [{"index": "1"}]}, {"tool_calls": [{"id": 3.5}]}, {"content": 5}]
)
def test_a_field_of_another_type_ends_the_anthropic_frames_too(delta: dict[str, Any]) -> None:
    # As on the OpenAI surface: a malformed chunk (which the Python path would carry on
    # with, or fail on later), after the frames of the events before it.
    relay = _core.OpenAIRelay("m")
    relay.begin_anthropic("msg_x", "m")
    relay.feed((_chunk({"content": "a"}) + _chunk(delta)).encode())
    assert relay.failure is not None and relay.failure[0] == _core.RELAY_FAIL_SHAPE
    out = relay.render()
    assert out.count(b"event: ") == 4  # message_start, ping, the block's start, "a"
    assert out.endswith(b'"delta":{"type":"text_delta","text":"a"}}\n\n')
    assert not relay.ended


# Through the server, against the simulator.

WEATHER = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack(fast_sim_config())
    yield s
    s.close()


_IDS = re.compile(rb'"id":"msg_[0-9a-f]+"')


def _anonymous(data: bytes) -> bytes:
    return _IDS.sub(b'"id":"-"', data)


@pytest.mark.parametrize(
    "extra", [{}, {"tools": [WEATHER], "tool_choice": {"type": "any"}}], ids=["text", "tools"]
)
def test_relay_sends_what_the_event_path_sends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any]
) -> None:
    req = body(**extra)
    relayed = stack.post("/v1/messages", req, {"idempotency-key": "a"})
    monkeypatch.delattr(OpenAIAdapter, "relay")  # the dispatcher falls back to events
    evented = stack.post("/v1/messages", req, {"idempotency-key": "b"})
    assert relayed.status == evented.status == 200
    assert relayed.headers["x-tiergate-deployment"] == DEP
    assert "x-tiergate-replay" not in evented.headers
    assert relayed.data.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert _anonymous(relayed.data) == _anonymous(evented.data)
    assert (b'"type":"tool_use"' in relayed.data) == bool(extra)
    assert stack.calls(DEP) == 2


def test_relayed_anthropic_replay_is_identical(stack: Stack) -> None:
    req = body()
    first = stack.post("/v1/messages", req)
    second = stack.post("/v1/messages", req)
    assert second.headers["x-tiergate-replay"] == "true"
    assert second.data == first.data
    assert first.data.endswith(b'data: {"type":"message_stop"}\n\n')
    assert stack.calls(DEP) == 1


def test_the_anthropic_sdk_streams_a_relayed_answer(stack: Stack) -> None:
    question = f"Explain routing briefly. {uuid.uuid4().hex}"
    # Closed here: a pooled connection left to the garbage collector is a ResourceWarning
    # at whichever test's collection finds it.
    with (
        anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0) as client,
        client.messages.stream(
            model=DEP, max_tokens=40, messages=[{"role": "user", "content": question}]
        ) as stream,
    ):
        assert stream.response.headers["x-tiergate-deployment"] == DEP
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    assert stack.calls(DEP) == 1


@pytest.mark.parametrize(("fault", "message"), MIDWAY_FAULTS)
def test_a_relayed_anthropic_stream_failing_midway_ends_with_an_error_event(
    stack: Stack, fault: str, message: str
) -> None:
    stack.fault(DEP, fault)
    resp = stack.post("/v1/messages", body(max_tokens=200))
    assert resp.status == 200 and resp.headers["x-tiergate-deployment"] == DEP
    assert b"message_stop" not in resp.data and b"text_delta" in resp.data
    last = resp.data.decode().rstrip("\n").split("\n\n")[-1]
    assert last.startswith('event: error\ndata: {"type":"error","error":{"type":"api_error"')
    assert f'"message":"{message}' in last
