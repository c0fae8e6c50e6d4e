"""The core's reading of the usual chat-completions body against the Python parser and
the separate core calls: whenever the core takes a body in, ``parse_openai_request``
reads the same request from it, and its key, token estimate and capabilities are what
``Idempotency.key``, ``estimate_tokens`` and the planner's own reading give; the core
leaves every body the parser refuses (and every unusual one) to the parser."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import spelled
from planning import assert_plans_alike
from tiergate import _core
from tiergate.envelope import ChatRequest, Message, PlainChatRequest, TextPart
from tiergate.errors import RequestError
from tiergate.routing.idempotency import Idempotency
from tiergate.server.parse_openai import ingest_plain_openai_request, parse_openai_request

texts = st.text(max_size=8) | st.sampled_from(["", "Say hi.", 'q"\\\n\x01é日本/'])
odd = st.none() | st.booleans() | st.integers(-2, 3) | st.floats(-1, 3) | st.just([]) | texts
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "other"])
# A text as a string or as an array of one text part (the core reads both as the text).
contents = texts | st.builds(lambda t: [{"type": "text", "text": t}], texts)
text_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "text", "refusal", "image_url"]), "text": texts},
    optional={"cache_control": st.just({"type": "ephemeral"}), "x_note": texts},
)
parts = st.lists(
    text_part | st.fixed_dictionaries({"type": odd, "text": texts | odd}) | odd, max_size=2
)
plain_messages = st.fixed_dictionaries({"role": roles, "content": contents})


def readable(m: dict[str, Any]) -> bool:
    """A message the core reads: a plain role and a non-empty text."""
    content = m["content"]
    text = content if isinstance(content, str) else content[0]["text"]
    return m["role"] in ("system", "developer", "user", "assistant") and bool(text)


messages = st.lists(
    plain_messages
    | st.fixed_dictionaries(
        {"role": roles, "content": texts | parts | odd}, optional={"name": texts}
    )
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
        "temperature": st.floats(0, 2) | st.floats(-1, 3) | st.integers(-1, 3) | odd,
        "top_p": st.floats(0, 1) | st.sampled_from([1, 1.0, 0, -0.0, 1e-300]) | odd,
        "seed": st.integers(-(2**63), 2**63 - 1) | st.integers(2**63, 2**64) | odd,
        "n": st.sampled_from([1, 2, 0, 1.0]) | odd,
        "stream_options": st.just({"include_usage": True})
        | st.fixed_dictionaries({}, optional={"include_usage": odd, "x": odd})
        | odd,
        "stop": st.just(["x"]) | st.lists(texts, max_size=5) | odd,
    },
)


tenants = st.sampled_from(["default", "t", "é\x00x"])


def reference(raw: bytes) -> Any:
    try:
        return parse_openai_request(orjson.loads(raw), raw)
    except RequestError as exc:
        return ("refused", exc.message)
    except orjson.JSONDecodeError:
        return ("not json",)


def plain(raw: bytes) -> ChatRequest | None:
    got = ingest_plain_openai_request(raw, None)
    return None if got is None else got[0]


def separately(chat: ChatRequest, raw: bytes, tenant: str) -> tuple[bytes, tuple[int, int]]:
    """The key and (capabilities, tokens) as the general path computes them."""
    caps = _core.CAP_STREAMING if chat.stream else 0
    assert not chat.tools and chat.response_format.kind == "text" and not chat.has_images
    key = Idempotency.key(raw, tenant, "openai", chat.stream, None)
    return key, (caps, _core.estimate_tokens(raw))


def check(raw: bytes, tenant: str) -> bool:
    """The core reads ``raw`` only as the parser does: it leaves a body the parser refuses
    to it, and for one it takes gives the parser's request, the general path's key and
    ``(capabilities, tokens)``. Whether it took the body."""
    got = ingest_plain_openai_request(raw, Idempotency.scope(tenant, "openai"))
    expected = reference(raw)
    if got is None:
        return False
    assert isinstance(expected, ChatRequest)  # the parser names the field otherwise
    chat, key, known = got
    assert chat == expected
    # (== takes -0.0 for 0.0; the provider's body would not)
    assert repr((chat.temperature, chat.top_p)) == repr((expected.temperature, expected.top_p))
    assert (key, known) == separately(chat, raw, tenant)
    return True


@settings(max_examples=600, deadline=None)
@given(bodies, st.booleans(), tenants)
def test_core_reads_a_body_only_as_the_parser_does(
    body: dict[str, Any], ascii_only: bool, tenant: str
) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    check(raw, tenant)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        plain_messages.filter(readable),
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
    assert check(raw, "t")


plain_bodies = st.fixed_dictionaries(
    {
        "model": st.just("auto"),
        "messages": st.lists(
            plain_messages.filter(readable),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "max_tokens": st.integers(1, 99),
        "stream": st.booleans(),
        "user": texts,
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "seed": st.integers(-5, 5),
        "stop": st.lists(texts, max_size=4),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    },
)


# Keys a respelled body may hold a decoy of before its value.
_DECOYED = ("role", "content", "messages", "model", "stream", "temperature", "seed")


@st.composite
def respelled_bodies(draw: st.DrawFn) -> bytes:
    """Plain bodies and all the others, respelled."""
    return spelled(draw, draw(plain_bodies | bodies), odd, _DECOYED).encode()


@settings(max_examples=600, deadline=None)
@given(respelled_bodies(), tenants)
def test_core_reads_a_respelled_body_only_as_the_parser_does(raw: bytes, tenant: str) -> None:
    check(raw, tenant)


# The sampling options' values at and around the edges of what the parser accepts.
def edges(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


options_fields: dict[str, st.SearchStrategy[Any]] = {
    "temperature": edges(0, 1, 1.0, 2, 2.0, -0.0, 0.7, 1.5, 2.0000001, -1e-9, 3, True)
    | st.floats(-1, 3)
    | odd,
    "top_p": edges(0, 1, 1.0, 0.5, -0.0, 1.0000001, 2, False) | st.floats(-1, 2) | odd,
    "seed": edges(0, -1, 2**63 - 1, -(2**63), 2**63, 1.0, 2.5, "1", True) | odd,
    "n": edges(1, 1.0, 2, 0, -1, True, None),
    "stop": st.lists(texts | odd, max_size=5) | texts | odd,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": odd, "x": odd}) | odd,
}
options = st.fixed_dictionaries({}, optional=options_fields)
valid_options = st.fixed_dictionaries(
    {},
    optional={
        # (not -0.0: the core leaves a negative zero to the parser)
        "temperature": edges(0, 1, 1.0, 2, 2.0, 0.7, 1.5, None) | st.floats(0, 2),
        "top_p": edges(0, 1, 1.0, 0.5, None) | st.floats(0, 1),
        "seed": edges(0, -1, 2**63 - 1, -(2**63), None),
        "n": edges(1, None),
        "stop": st.lists(texts, max_size=4) | texts | st.none(),
        "stream_options": st.fixed_dictionaries(
            {}, optional={"include_usage": st.none() | st.booleans(), "x": odd}
        )
        | st.none(),
    },
)
readable_messages = st.lists(plain_messages.filter(readable), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(options, readable_messages, tenants)
def test_core_reads_the_sampling_options_only_as_the_parser_does(
    opts: dict[str, Any], msgs: list[dict[str, Any]], tenant: str
) -> None:
    raw = orjson.dumps({"model": "auto", "messages": msgs, **opts})
    check(raw, tenant)


# One option at a time: a value the parser refuses is then the body's only fault.
one_option = st.sampled_from(list(options_fields)).flatmap(
    lambda name: st.tuples(st.just(name), options_fields[name])
)


@settings(max_examples=300, deadline=None)
@given(one_option, readable_messages, tenants)
def test_core_reads_each_sampling_option_only_as_the_parser_does(
    option: tuple[str, Any], msgs: list[dict[str, Any]], tenant: str
) -> None:
    name, value = option
    check(orjson.dumps({"model": "auto", "messages": msgs, name: value}), tenant)


@settings(max_examples=300, deadline=None)
@given(valid_options, readable_messages, tenants)
def test_core_takes_every_valid_sampling_option(
    opts: dict[str, Any], msgs: list[dict[str, Any]], tenant: str
) -> None:
    raw = orjson.dumps({"model": "auto", "messages": msgs, **opts})
    assert check(raw, tenant)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "user", "assistant"]),
                "content": st.builds(lambda part: [part], text_part) | parts | contents,
            }
        ),
        min_size=1,
        max_size=2,
    ),
    tenants,
)
def test_core_reads_content_parts_only_as_the_parser_does(
    msgs: list[dict[str, Any]], tenant: str
) -> None:
    raw = orjson.dumps({"model": "auto", "messages": msgs})
    check(raw, tenant)


def test_without_a_scope_there_is_no_key() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}'
    got = ingest_plain_openai_request(raw, None)
    assert got is not None and got[1] is None and got[2][0] == _core.CAP_STREAMING


def test_bodies_that_are_not_plain_are_left_to_the_parser() -> None:
    for raw in [b"", b"{", b"[]", b'{"model": "m", "messages": [], "tools": []}']:
        assert plain(raw) is None


def test_the_planner_plans_alike_with_what_the_core_computed() -> None:
    for text, stream in [("Say hi.", False), ("Prove it step by step. " * 40, True)]:
        raw = orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": text}], "stream": stream}
        )
        got = ingest_plain_openai_request(raw, None)
        assert got is not None
        chat, _, known = got
        assert_plans_alike(chat, known, "openai")


def test_a_plain_request_makes_its_messages_on_first_use() -> None:
    raw = orjson.dumps(
        {
            "model": "auto",
            "messages": [
                {"role": "developer", "content": "Be terse."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "temperature": 0.5,
        }
    )
    got = ingest_plain_openai_request(raw, None)
    assert got is not None
    chat, expected = got[0], reference(raw)
    assert isinstance(chat, PlainChatRequest) and isinstance(expected, ChatRequest)
    slot = ChatRequest.__dict__["messages"]
    assert slot.__get__(chat) is None  # nothing made for the provider body, the scan or the plan
    assert chat.plain_texts == chat.scan_texts == [("system", "Be terse."), ("user", "Hi")]
    assert chat.last_text == "Hi"
    assert chat.has_images is False  # reads the messages: made now, once
    made = slot.__get__(chat)
    assert chat.messages is made and chat.messages == expected.messages
    assert chat.plain_texts == [("system", "Be terse."), ("user", "Hi")]
    # Equal to the parser's request either way round, and only to an equal one.
    assert chat == expected and expected == chat
    assert chat != dataclasses.replace(expected, temperature=0.25)
    assert chat != dataclasses.replace(expected, messages=expected.messages[:1])
    # Messages set otherwise are not the pairs' any more.
    other = dataclasses.replace(chat, messages=[Message("user", [TextPart("[redacted]")])])
    assert type(other) is PlainChatRequest
    assert other.plain_texts is None and other.scan_texts is None
    assert other.last_text == "[redacted]" and other.messages[0].text == "[redacted]"
    fresh = ingest_plain_openai_request(raw, None)
    assert fresh is not None
    redacted = dataclasses.replace(fresh[0], messages=[Message("user", [TextPart("x")])])
    assert redacted.plain_texts is None and redacted.last_text == "x"
    with pytest.raises(TypeError):
        hash(chat)
