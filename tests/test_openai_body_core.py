"""The provider body the core writes for a non-streamed OpenAI call against the
Python reference (``orjson.dumps`` of ``build_openai_request`` without the stream
members): the same bytes, or the same refusal, for any request."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tiergate import _core
from tiergate.config import DeploymentConfig, Price
from tiergate.envelope import (
    TEXT_FORMAT,
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from tiergate.providers.openai import build_openai_request, openai_body
from tiergate.server.parse_openai import ingest_plain_openai_request


def reference(
    request: ChatRequest, dep: DeploymentConfig, compatible: bool, stream: bool = False
) -> bytes | str:
    """The dict path: what the adapter sent before the core wrote bodies."""
    body = build_openai_request(request, dep, compatible=compatible)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        return f"refused: {exc}"


def core(
    request: ChatRequest, dep: DeploymentConfig, compatible: bool, stream: bool = False
) -> bytes | str:
    try:
        return openai_body(request, dep, compatible=compatible, stream=stream)
    except orjson.JSONEncodeError as exc:
        return f"refused: {exc}"


texts = st.text(max_size=12) | st.sampled_from(["", 'q"\\\n\x01\x7fé日本/\u2028', "\ud800"])
plain = st.builds(
    lambda role, text: Message(role, [TextPart(text)]),
    st.sampled_from(["system", "developer", "user", "assistant"]),
    texts,
)
odd = st.one_of(
    st.builds(lambda t: Message("user", [TextPart(t), TextPart("b")]), texts),
    st.builds(lambda t: Message("user", [ImagePart(f"https://x/{len(t)}.png")]), texts),
    st.builds(lambda t: Message("user", []), texts),
    st.builds(lambda t: Message("user", [TextPart(t)], name=t), texts),
    st.builds(lambda t: Message("assistant", [TextPart(t)], [ToolCall("c1", "f", "{}")]), texts),
    st.builds(lambda t: Message("tool", [TextPart(t)], tool_call_id="c1"), texts),
)
TOOL = Tool("f", "does f", {"type": "object", "properties": {"a": {"type": "string"}}})
requests = st.builds(
    lambda messages, max_tokens, tools, fmt, temperature, top_p, stop, seed, stream: ChatRequest(
        "auto",
        messages,
        [TOOL] if tools else [],
        "required" if tools == 2 else "auto",
        None,
        tools != 3,
        fmt,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
        stream,
    ),
    st.lists(plain | plain | odd, max_size=4),
    st.none() | st.integers(1, 2**64),
    st.integers(0, 3),
    st.sampled_from(
        [TEXT_FORMAT, ResponseFormat("json_object"), ResponseFormat("json_schema", {}, "r")]
    ),
    st.none() | st.floats(0, 2),
    st.none() | st.floats(0, 1) | st.sampled_from([1e-7, 1.0, 0.0]),
    st.lists(texts, max_size=2),
    st.none() | st.integers(-(2**63), 2**64),
    st.booleans(),
)


@settings(max_examples=600, deadline=None)
@given(requests, st.booleans(), st.sampled_from(["m-1", 'odd "model"\n']), st.booleans())
# Two refusals at once: the bound out of range and a lone surrogate in the options. The
# body is refused for what comes first in it, the bound, as orjson refuses the dict.
@example(
    ChatRequest("auto", [Message("user", [TextPart("hi")])], max_tokens=2**64, stop=["\ud800"]),
    False,
    "m-1",
    False,
)
def test_core_body_matches_the_dict_and_orjson(
    request: ChatRequest, compatible: bool, model: str, stream: bool
) -> None:
    dep = DeploymentConfig(provider="p", model=model, tier="t", price=Price(input=1, output=1))
    assert core(request, dep, compatible, stream) == reference(request, dep, compatible, stream)


def test_the_usual_request_is_written_by_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    request = ChatRequest(
        "auto", [Message("system", [TextPart("terse")]), Message("user", [TextPart("hi")])]
    )
    dep = DeploymentConfig(provider="p", model="m", tier="t", price=Price(input=1, output=1))
    monkeypatch.setattr(
        "tiergate.providers.openai.build_openai_request",
        lambda *a, **k: pytest.fail("went through the dict"),
    )
    assert openai_body(request, dep, compatible=True) == (
        b'{"model":"m","messages":[{"role":"system","content":"terse"},'
        b'{"role":"user","content":"hi"}],"max_tokens":4096}'
    )


def test_rest_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="object"):
        _core.openai_chat_body("m", [], "max_tokens", 1, b"[1]")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["system", "user", "assistant"]),
            texts.filter(lambda t: t and "\ud800" not in t),  # orjson writes the body
        ),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
def test_an_ingested_request_uses_the_cores_reading_only_for_its_own_messages(
    pairs: list[tuple[str, str]], stream: bool
) -> None:
    """A body the core read as plain keeps its (role, text) reading for the provider body;
    a request made from it with other messages (as a redaction makes one) does not."""
    raw = orjson.dumps({"model": "auto", "messages": [{"role": r, "content": t} for r, t in pairs]})
    got = ingest_plain_openai_request(raw, None)
    if got is None:  # a text the core does not take plain (a lone surrogate, say)
        return
    chat = got[0]
    assert chat.plain_texts == pairs  # the messages not made yet: the pairs are theirs
    messages = chat.messages
    assert chat.plain is not None and chat.plain[0] is messages and chat.messages is messages
    assert chat.plain_texts == pairs  # made from the pairs: still theirs
    dep = DeploymentConfig(provider="p", model="m", tier="t", price=Price(input=1, output=1))
    assert core(chat, dep, False, stream) == reference(chat, dep, False, stream)
    redacted = dataclasses.replace(
        chat, messages=[Message(m.role, [TextPart("[redacted]")]) for m in chat.messages]
    )
    body = core(redacted, dep, False, stream)
    assert body == reference(redacted, dep, False, stream)
    assert isinstance(body, bytes) and body.count(b"[redacted]") == len(pairs)
