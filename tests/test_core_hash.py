"""request_key / canonical_request: the core against the pure-Python reference."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core_reference as ref
from tiergate import _core

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
    optional={
        "content": st.none()
        | TEXT
        | st.lists(
            st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}) | JSON, max_size=2
        ),
        "name": st.none() | TEXT,
        "tool_calls": st.none() | st.lists(JSON, max_size=2),
    },
)
CHAT = st.fixed_dictionaries(
    {"model": TEXT, "messages": st.lists(MESSAGE, max_size=4)},
    optional={
        "temperature": st.sampled_from([0, 0.5, 1, 1.0, 2]),
        "top_p": st.sampled_from([1, 1.0, 0.9]),
        "n": st.sampled_from([1, 2]),
        "presence_penalty": st.sampled_from([0, 0.0, -0.0, 0.5]),
        "frequency_penalty": st.sampled_from([0, 0.5]),
        "stream": st.booleans(),
        "stream_options": JSON,
        "user": TEXT,
        "metadata": JSON,
        "logprobs": st.booleans() | st.none(),
        "parallel_tool_calls": st.booleans(),
        "response_format": st.sampled_from(
            [{"type": "text"}, {"type": "json_object"}, {"type": "text", "x": 1}]
        ),
        "tools": st.lists(JSON, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "stop": st.none() | TEXT | st.lists(TEXT, max_size=2),
        "logit_bias": st.dictionaries(TEXT, st.integers(-100, 100), max_size=2),
        "seed": st.integers(0, 2**40),
        "extra": JSON,
    },
)


def dumps(obj: Any, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TEXT, JSON, max_size=6), st.booleans(), TEXT)
def test_arbitrary_objects_match_reference(
    obj: dict[str, Any], ascii_only: bool, tenant: str
) -> None:
    body = dumps(obj, ascii_only)
    assert _core.canonical_request(body) == ref.canonical_request(body)
    assert _core.request_key(body, tenant) == ref.request_key(body, tenant)


@settings(max_examples=300, deadline=None)
@given(CHAT, st.booleans())
def test_chat_bodies_match_reference(obj: dict[str, Any], ascii_only: bool) -> None:
    body = dumps(obj, ascii_only)
    assert _core.canonical_request(body) == ref.canonical_request(body)
    assert _core.request_key(body, "t") == ref.request_key(body, "t")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_panic(body: bytes) -> None:
    try:
        key = _core.request_key(body)
    except ValueError:
        return
    assert len(key) == 16


@settings(max_examples=200, deadline=None)
@given(JSON.filter(lambda v: not isinstance(v, dict)))
def test_non_objects_are_rejected(v: Any) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        _core.request_key(json.dumps(v).encode())


def test_semantic_equivalences() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    key = _core.request_key(json.dumps(base).encode(), "t")
    same = [
        {"messages": [{"content": "hi", "role": "user"}], "model": "m"},
        {**base, "temperature": 1.0, "top_p": 1, "n": 1, "stream": True, "user": "u"},
        {**base, "stream_options": {"include_usage": True}, "metadata": {"a": 1}, "store": False},
        {**base, "response_format": {"type": "text"}, "tool_choice": "none", "seed": None},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi", "name": None}]},
    ]
    for obj in same:
        assert _core.request_key(json.dumps(obj).encode(), "t") == key, obj
    different = [
        {**base, "model": "n"},
        {**base, "temperature": 0.7},
        {**base, "tool_choice": "auto"},
        {"model": "m", "messages": [{"role": "user", "content": "hi "}]},
    ]
    for obj in different:
        assert _core.request_key(json.dumps(obj).encode(), "t") != key, obj
    assert _core.request_key(json.dumps(base).encode(), "u") != key
    assert _core.request_key(json.dumps(base).encode()) != key


def test_bad_input_raises_value_error() -> None:
    for body in [b"", b"{", b"\xff\xfe", b"[]", b'{"a": NaN}', b'{"a": 1e400}', b"{} x"]:
        with pytest.raises(ValueError):
            _core.request_key(body)
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ValueError, match="recursion"):
        _core.request_key(deep)
    ok = b'{"a":' + b"[" * 120 + b"]" * 120 + b"}"
    assert len(_core.request_key(ok)) == 16


def test_number_forms() -> None:
    body = b'{"a":1.0,"b":-0.0,"c":0.7,"d":1e20,"e":18446744073709551615,"f":1E2,"g":-5}'
    assert _core.canonical_request(body) == (
        b'{"a":1,"b":0,"c":0x3fe6666666666666,"d":0x4415af1d78b58c40,'
        b'"e":0x43f0000000000000,"f":100,"g":-5}'
    )
    assert _core.canonical_request(body) == ref.canonical_request(body)


def test_number_ties_agree_with_the_reference() -> None:
    # 2^49 + 0.25 prints as ...312.2 in Python and ...312.3 in Rust's `{:e}`: both
    # round-trip, so a decimal canonical form would depend on the printer.
    for text in (b"562949953421312.2", b"562949953421312.25", b"562949953421312.125", b"0.1"):
        body = b'{"x":' + text + b"}"
        assert _core.canonical_request(body) == ref.canonical_request(body)
    assert _core.request_key(b'{"x":562949953421312.2}') == _core.request_key(
        b'{"x":562949953421312.25}'
    )
