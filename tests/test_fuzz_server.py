"""Near-valid requests through the whole server, both surfaces: whatever a caller sends
is answered (200), refused in the caller's API shape with a 4xx, or failed as the
providers failed it (502-504), never a 500, a hang or a malformed answer. The parsers are fuzzed on their own in test_parse.py; this drives
everything behind them too (the core's ingest, the planner, every provider adapter
through the simulators, the renderers, the stream framers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import mutated, values
from harness import Stack, assert_honest, fast_sim_config

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}

# Valid requests of the shapes callers send: mutations of these reach deep paths.
OPENAI_BASES: list[dict[str, Any]] = [
    {"model": "auto", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 20},
    {
        "model": "fast",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        ],
        "max_tokens": 30,
    },
    {
        "model": "best",
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}],
        "tool_choice": "required",
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        ],
    },
    {
        "model": "auto",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": WEATHER},
        },
        "messages": [{"role": "user", "content": "As JSON."}],
    },
]
ANTHROPIC_BASES: list[dict[str, Any]] = [
    {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "Say hi."}]},
    {
        "model": "fast",
        "max_tokens": 30,
        "stream": True,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}],
    },
    {
        "model": "best",
        "max_tokens": 40,
        "tools": [{"name": "weather", "input_schema": WEATHER}],
        "tool_choice": {"type": "any"},
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "rain"}],
            },
        ],
    },
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(fast_sim_config())
    yield s
    s.close()


def _raw(body: dict[str, Any]) -> bytes:
    # json, not orjson: integers past 64 bits are valid JSON and must be refused politely.
    return json.dumps(body).encode()


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(body=mutated(OPENAI_BASES))
def test_the_openai_surface_answers_or_refuses_any_request(
    stack: Stack, body: dict[str, Any]
) -> None:
    assert_honest(stack.post("/v1/chat/completions", _raw(body)), "openai")


@_SETTINGS
@given(body=mutated(ANTHROPIC_BASES))
def test_the_anthropic_surface_answers_or_refuses_any_request(
    stack: Stack, body: dict[str, Any]
) -> None:
    assert_honest(stack.post("/v1/messages", _raw(body)), "anthropic")


@_SETTINGS
@given(body=mutated(OPENAI_BASES))
def test_explain_answers_or_refuses_any_request(stack: Stack, body: dict[str, Any]) -> None:
    assert_honest(stack.post("/v1/route/explain", _raw(body)), "openai")


@_SETTINGS
@given(
    body=mutated([{"request_id": "r1", "score": 0.5}]) | values,
    headers=st.dictionaries(
        st.sampled_from(
            [
                "x-tiergate-latency-budget-ms",
                "x-tiergate-max-cost-usd",
                "x-tiergate-min-quality",
                "x-tiergate-timeout-ms",
                "x-tiergate-tenant",
                "idempotency-key",
            ]
        ),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
        max_size=3,
    ),
)
def test_feedback_and_headers_are_answered_or_refused(
    stack: Stack, body: Any, headers: dict[str, str]
) -> None:
    assert_honest(stack.post("/v1/feedback", json.dumps(body).encode()), "openai")
    resp = stack.post("/v1/chat/completions", _raw(OPENAI_BASES[0]), headers)
    assert_honest(resp, "openai")
