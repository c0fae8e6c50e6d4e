"""Faults of every kind on any deployments, requests of every shape: whatever breaks,
each caller gets an answer or an error in its API shape (never a 500), a stream ends
with its terminal event or an error event (never silently), and a request sent again
with its Idempotency-Key replays without a second provider call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Stack, assert_honest, fast_sim_config

DEPLOYMENTS = [
    "gpt-4o-mini",
    "gemini-flash",
    "llama-8b",
    "claude-haiku",
    "llama-70b",
    "gpt-4o",
    "claude-sonnet",
    "gemini-pro",
]
KINDS = ["error", "latency", "ratelimit", "stall", "cut", "malformed", "stream_error"]

faults = st.lists(
    st.fixed_dictionaries(
        {
            "deployment": st.sampled_from([*DEPLOYMENTS, "*"]),  # "*": every model
            "kind": st.sampled_from(KINDS),
            "rate": st.sampled_from([0.5, 1.0]),
            "status": st.sampled_from([400, 429, 500, 503, 529]),
            "retry_after_s": st.just(0.2),
            "factor": st.just(3.0),
        }
    ),
    max_size=4,
)
requests = st.lists(
    st.tuples(
        st.sampled_from(["openai", "anthropic"]),
        st.sampled_from(["auto", "fast", "best"]),
        st.booleans(),  # stream
        st.booleans(),  # with tools
    ),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Stalls resolve in a second: the inter-chunk timeout and each request's deadline.
    s = Stack(fast_sim_config(inter_chunk_timeout_s=0.5))
    yield s
    s.close()


def _body(surface: str, route: str, stream: bool, tools: bool) -> dict[str, Any]:
    text = f"Tell me about routing. {uuid.uuid4().hex}"
    body: dict[str, Any] = {
        "model": route,
        "max_tokens": 30,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    if tools:
        schema = {"type": "object", "properties": {"city": {"type": "string"}}}
        body["tools"] = (
            [{"type": "function", "function": {"name": "weather", "parameters": schema}}]
            if surface == "openai"
            else [{"name": "weather", "input_schema": schema}]
        )
    return body


def _send(stack: Stack, surface: str, body: dict[str, Any], key: str) -> Any:
    path = "/v1/messages" if surface == "anthropic" else "/v1/chat/completions"
    return stack.post(path, body, {"idempotency-key": key, "x-tiergate-timeout-ms": "1500"})


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(faults=faults, requests=requests)
def test_whatever_fails_each_caller_gets_an_honest_answer(
    stack: Stack, faults: list[dict[str, Any]], requests: list[tuple[str, str, bool, bool]]
) -> None:
    stack.clear_faults()
    for f in faults:
        where = f.pop("deployment")
        if where == "*":
            stack._sim("POST", "/_sim/faults", {"model": "*", **f})
        else:
            stack.fault(where, **f)
    try:
        for surface, route, stream, tools in requests:
            body = _body(surface, route, stream, tools)
            key = uuid.uuid4().hex
            first = _send(stack, surface, body, key)
            assert_honest(first, surface)
            if first.status != 200 or '"error"' in first.data.decode()[-400:]:
                continue  # failures are never stored
            calls = {d: stack.calls(d) for d in DEPLOYMENTS}
            again = _send(stack, surface, body, key)
            assert again.status == 200 and again.headers.get("x-tiergate-replay") == "true"
            assert again.data == first.data
            assert {d: stack.calls(d) for d in DEPLOYMENTS} == calls  # billed once
    finally:
        stack.clear_faults()
