"""The core's reading of the usual chat-completions body against the Python parser:
whenever the core reads a body, ``parse_openai_request`` reads the same request from it;
the core leaves every body the parser refuses (and every unusual one) to the parser."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.errors import RequestError
from tiergate.server.parse_openai import parse_openai_request, parse_plain_openai_request

texts = st.text(max_size=8) | st.sampled_from(["", "Say hi.", 'q"\\\n\x01é日本/'])
odd = st.none() | st.booleans() | st.integers(-2, 3) | st.floats(-1, 3) | st.just([]) | texts
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "other"])
plain_messages = st.fixed_dictionaries({"role": roles, "content": texts})
messages = st.lists(
    plain_messages
    | st.fixed_dictionaries({"role": roles, "content": texts | odd}, optional={"name": texts})
    | odd,
    max_size=3,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["auto", ""]) | odd,
        "messages": messages | odd,
        "max_tokens": st.integers(-1, 10**6) | odd,
        "max_completion_tokens": st.integers(0, 99) | odd,
        "stream": st.booleans() | odd,
        "user": texts,
        "metadata": st.just({"a": "b"}),
        "temperature": st.floats(0, 2),
        "stream_options": st.just({"include_usage": True}),
        "stop": st.just(["x"]),
    },
)


def reference(raw: bytes) -> Any:
    try:
        return parse_openai_request(orjson.loads(raw), raw)
    except RequestError as exc:
        return ("refused", exc.message)
    except orjson.JSONDecodeError:
        return ("not json",)


@settings(max_examples=600, deadline=None)
@given(bodies, st.booleans())
def test_core_reads_a_body_only_as_the_parser_does(body: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    plain = parse_plain_openai_request(raw)
    if plain is not None:
        assert plain == reference(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        plain_messages.filter(
            lambda m: m["role"] in ("system", "developer", "user", "assistant") and m["content"]
        ),
        min_size=1,
        max_size=3,
    ),
    st.none() | st.integers(1, 10**6),
    st.none() | st.booleans(),
)
def test_core_reads_the_plain_shape(
    msgs: list[dict[str, str]], max_tokens: int | None, stream: bool | None
) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": msgs, "user": "u"}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream is not None:
        body["stream"] = stream
    raw = orjson.dumps(body)
    plain = parse_plain_openai_request(raw)
    assert plain is not None and plain == reference(raw)


def test_bodies_that_are_not_plain_are_left_to_the_parser() -> None:
    for raw in [b"", b"{", b"[]", b'{"model": "m", "messages": [], "tools": []}']:
        assert parse_plain_openai_request(raw) is None
