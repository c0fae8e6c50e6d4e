"""The core's reading of the usual Anthropic Messages body against the Python parser and
the separate core calls: whenever the core takes a body in, ``parse_anthropic_request``
reads the same request from it, and its key, token estimate and capabilities are what
``Idempotency.key`` and the planner's own reading give; the core leaves every body the
parser refuses (and every unusual one) to the parser, which names the field as before."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import mutated, parser_reading, spelled
from harness import Stack, fast_sim_config
from planning import assert_plans_alike
from tiergate.config import DeploymentConfig, Price
from tiergate.envelope import TextPart
from tiergate.providers.openai import openai_body
from tiergate.routing.idempotency import Idempotency
from tiergate.routing.planner import _known
from tiergate.server.parse_anthropic import ingest_plain_anthropic_request, parse_anthropic_request

texts = st.text(max_size=8) | st.sampled_from(["", "Say hi.", 'q"\\\n\x01é日本/\u2028'])
odd: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.floats(-1, 3)
    | st.sampled_from([-0.0, 0.0, 1.0, 0.5, 2**63, 1e30])
    | st.just([])
    | st.just({})
    | texts
)
cache_control = st.just({"type": "ephemeral"})
text_blocks = st.fixed_dictionaries(
    {"type": st.just("text"), "text": texts}, optional={"cache_control": cache_control}
)
other_blocks = (
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "thinking"])})
    | st.just({"type": "text", "text": "x", "citations": []})
    | st.just({"type": "tool_use", "id": "t1", "name": "f", "input": {}})
    | st.just({"type": "tool_result", "tool_use_id": "t1", "content": "42"})
    | st.just({"type": "thinking", "thinking": "hm", "signature": "s"})
    | st.just({"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}})
    | st.fixed_dictionaries({"type": st.just("text"), "text": odd})
)
roles = st.sampled_from(["user", "assistant", "system", "tool"])
blocks = st.lists(text_blocks, min_size=1, max_size=3)
plain_turns = st.fixed_dictionaries(
    {"role": st.just("user"), "content": texts.filter(bool) | blocks}
) | st.fixed_dictionaries(
    {
        "role": st.just("assistant"),
        "content": texts.filter(bool) | blocks.filter(lambda b: any(x["text"] for x in b)),
    }
)
turns = (
    plain_turns
    | st.fixed_dictionaries(
        {"role": roles, "content": texts | st.lists(text_blocks | other_blocks, max_size=3) | odd},
        optional={"name": texts},
    )
    | odd
)
systems = texts | st.lists(text_blocks, max_size=3) | st.lists(text_blocks | other_blocks | odd)
plain_bodies = st.fixed_dictionaries(
    {
        "model": st.just("auto"),
        "max_tokens": st.integers(1, 99),
        "messages": st.lists(plain_turns, min_size=1, max_size=3),
    },
    optional={
        "system": texts | st.lists(text_blocks, max_size=2),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1) | st.sampled_from([0, 1]),
        "stop_sequences": st.lists(texts, max_size=3) | texts,
        "stream": st.booleans(),
        "metadata": st.just({"user_id": "u-1"}),
    },
)
# Each field of a usual body left, dropped or given another value (odd, or one of the
# other shapes the parser reads), and fields the core leaves to the parser added.
others = {
    "model": st.sampled_from(["auto", ""]) | odd,
    "max_tokens": st.integers(-1, 10**6) | st.just(2**64) | odd,
    "system": systems | odd,
    "messages": st.lists(turns, max_size=3) | odd,
    "temperature": st.floats(-0.5, 1.5) | odd,
    "top_p": st.floats(0, 1) | odd,
    "stop_sequences": st.lists(texts, max_size=17) | texts | odd,
    "stream": st.booleans() | odd,
}
extras = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.just({"user_id": "u-1"}),
        "top_k": st.integers(0, 5),
        "thinking": st.just({"type": "disabled"}),
        "tools": st.just([]) | st.none(),
        "tool_choice": st.none() | st.just({"type": "auto"}),
        "output_format": st.none(),
        "response_format": st.just({"type": "json_schema", "json_schema": {"schema": {}}}),
    },
)


@st.composite
def near_plain_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(plain_bodies)
    for name, values in others.items():
        change = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace"]))
        if change == "drop":
            body.pop(name, None)
        elif change == "replace":
            body[name] = draw(values)
    body.update(draw(extras))
    return body


tenants = st.sampled_from(["default", "t", "é\x00x"])


def reference(raw: bytes) -> Any:
    return parser_reading(parse_anthropic_request, raw)


def check(raw: bytes, tenant: str) -> bool:
    """Whether the core took ``raw`` in; if so, everything it gave is what the general
    path computes: the request, its key, the planner's capabilities and estimate."""
    got = ingest_plain_anthropic_request(raw, Idempotency.scope(tenant, "anthropic"))
    if got is None:
        return False
    chat, key, known = got
    parsed = reference(raw)
    assert chat == parsed
    # -0.0 and 0.0 apart, 1 and 1.0 apart (a PlainChatRequest's repr says so; its fields
    # are a ChatRequest's)
    assert repr(chat).removeprefix("Plain") == repr(parsed)
    assert key == Idempotency.key(raw, tenant, "anthropic", chat.stream, None)
    assert known == _known(chat, "anthropic")
    plain = chat.plain_texts
    if plain is not None:
        # The core's reading is the messages: what the OpenAI adapter writes from.
        assert all(len(m.parts) == 1 for m in chat.messages)
        assert list(plain) == [
            (m.role, p.text) for m in chat.messages for p in m.parts if isinstance(p, TextPart)
        ]
    elif chat.turn_messages is None:
        # Not an agent's turn (tests/test_anthropic_turn.py): a message of several parts.
        assert any(len(m.parts) != 1 for m in chat.messages)
    no_key = ingest_plain_anthropic_request(raw, None)
    assert no_key is not None and no_key[1] is None
    return True


@settings(max_examples=800, deadline=None)
@given(near_plain_bodies(), st.booleans(), tenants)
def test_core_reads_a_body_only_as_the_parser_does(
    body: dict[str, Any], ascii_only: bool, tenant: str
) -> None:
    check(json.dumps(body, ensure_ascii=ascii_only).encode(), tenant)


@settings(max_examples=300, deadline=None)
@given(plain_bodies, tenants)
def test_core_reads_the_usual_shapes(body: dict[str, Any], tenant: str) -> None:
    assert check(orjson.dumps(body), tenant)


@st.composite
def respelled_bodies(draw: st.DrawFn) -> bytes:
    return spelled(draw, draw(plain_bodies | near_plain_bodies()), odd).encode()


@settings(max_examples=600, deadline=None)
@given(respelled_bodies(), tenants)
def test_core_reads_a_respelled_body_only_as_the_parser_does(raw: bytes, tenant: str) -> None:
    check(raw, tenant)


BASES = [
    {
        "model": "auto",
        "max_tokens": 16,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hi."}],
    },
    {
        "model": "auto",
        "max_tokens": 16,
        "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
            {"role": "user", "content": "d"},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["x", ""],
        "stream": True,
        "metadata": {"user_id": "u"},
    },
]


@settings(max_examples=800, deadline=None)
@given(mutated(BASES), tenants)
def test_mutated_bodies_never_raise_from_the_core(body: dict[str, Any], tenant: str) -> None:
    try:
        raw = orjson.dumps(body)
    except TypeError:  # an integer past 64 bits: orjson cannot write it
        raw = json.dumps(body).encode()
    check(raw, tenant)
    # Not JSON, cut short, not an object: left alone, never raised.
    for cut in (raw[: len(raw) // 2], raw + b"}", b"[" + raw + b"]", raw.replace(b'"', b"'", 1)):
        assert ingest_plain_anthropic_request(cut, "t\x00anthropic\x00") is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 1, "messages": [], "temperature": 0.5}, "messages"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}, "temperature"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "stop_sequences": [1]}, "stop_sequences"),
        ({"model": "m", "max_tokens": 1, "system": [{"type": "text"}], "messages": [{"role": "user", "content": "x"}]}, "system.0.text"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "text", "text": ""}]}]}, "messages.0.content"),
    ],
)  # fmt: skip
def test_a_refused_body_is_left_to_the_parser(body: dict[str, Any], param: str) -> None:
    """The core declines it, and the parser names the field as it always did."""
    raw = orjson.dumps(body)
    assert ingest_plain_anthropic_request(raw, "t\x00anthropic\x00") is None
    refused = reference(raw)
    assert refused[0] == "refused" and refused[2] == param


def test_the_planner_plans_alike_with_what_the_core_computed() -> None:
    for text, stream in [("Say hi.", False), ("Prove it step by step. " * 40, True)]:
        raw = orjson.dumps(
            {
                "model": "auto",
                "max_tokens": 64,
                "system": [{"type": "text", "text": "Be brief."}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                "stream": stream,
            }
        )
        got = ingest_plain_anthropic_request(raw, None)
        assert got is not None
        chat, _, known = got
        assert_plans_alike(chat, known, "anthropic")


@settings(max_examples=200, deadline=None)
@given(plain_bodies, st.booleans(), st.booleans())
def test_the_openai_adapter_writes_the_same_body_from_the_core_reading(
    body: dict[str, Any], compatible: bool, stream: bool
) -> None:
    """The provider's body written from the core's reading (``plain``, in the core) is
    the one written from the parser's request (through the dict)."""
    raw = orjson.dumps(body)
    got = ingest_plain_anthropic_request(raw, None)
    assert got is not None
    chat, parsed = got[0], parse_anthropic_request(body, raw)
    assert parsed.plain_texts is None
    assert openai_body(chat, DEPLOYMENT, compatible=compatible, stream=stream) == openai_body(
        parsed, DEPLOYMENT, compatible=compatible, stream=stream
    )


DEPLOYMENT = DeploymentConfig(provider="p", model="gpt-x", tier="t", price=Price(input=1, output=1))


def test_through_the_sidecar_the_core_and_the_parser_key_alike() -> None:
    """Real HTTP with the Anthropic SDK: a body of text blocks and options served from
    the core's reading (the parser's too, by the differential tests above), then the same
    body with a ``"tools": null`` the core leaves to the parser, which keys it alike:
    the second is the first's replay, streamed or not."""
    stack = Stack(fast_sim_config())
    try:
        client = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
        body: dict[str, Any] = {
            "model": "claude-haiku",
            "max_tokens": 60,
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hello"},
                        {"type": "text", "text": " there"},
                    ],
                }
            ],
            "temperature": 0.5,
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "u-1"},
        }
        sdk = {k: v for k, v in body.items() if k != "temperature"}  # not an SDK argument
        raw = client.messages.with_raw_response.create(**sdk, extra_body={"temperature": 0.5})
        msg = raw.parse()
        assert msg.content[0].type == "text" and msg.content[0].text
        assert "x-tiergate-idempotency" not in raw.headers  # led, not replayed
        for stream in (False, True):
            first = stack.post("/v1/messages", {**body, "stream": stream})
            assert (
                ingest_plain_anthropic_request(orjson.dumps({**body, "tools": None}), None) is None
            )
            again = stack.post("/v1/messages", {**body, "stream": stream, "tools": None})
            assert first.status == again.status == 200
            assert again.headers["x-tiergate-idempotency"] == "replay"
            assert again.data == first.data
        client.close()
    finally:
        stack.close()
