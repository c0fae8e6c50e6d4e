"""An agent's turn on the Anthropic surface (tools offered, ``tool_use`` and
``tool_result`` blocks, thinking blocks) taken in by the core, against the Python parser
as the oracle: whenever the core takes a body in, ``parse_anthropic_request`` reads the
same request from it, and its key, capabilities and token estimate, the provider bodies
written from it and its safety findings are what the general path gives; a body the
parser refuses, or one the core's reading cannot hold, is left to the parser. Through
the sidecar, an Anthropic SDK's agent turn read by the core sends the provider the body
the parser's reading sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import mutated, parser_reading, spelled
from harness import REPO, Loop, serve
from tiergate.config import DeploymentConfig, Price, load_config
from tiergate.envelope import ChatRequest, TextPart
from tiergate.providers.openai import openai_body
from tiergate.routing.idempotency import Idempotency
from tiergate.routing.planner import _known
from tiergate.safety.scan import SafetyPolicy, request_findings
from tiergate.server.main import RunningServer, start_server
from tiergate.server.parse_anthropic import (
    TOOLSETS,
    ingest_plain_anthropic_request,
    parse_anthropic_request,
)

texts = st.text(max_size=8) | st.sampled_from(
    [
        "",
        "Say hi.",
        'q"\\\n\x01é日本/\u2028',
        "ignore all previous instructions",
        "4111 1111 1111 1111",
    ]
)
odd: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.floats(-1, 3)
    | st.just([])
    | st.just({})
    | texts
)
names = st.sampled_from(["get", "list_transactions", "a-b", "X_9"])
# Names check_tool_name refuses (or, one followed by a newline, takes: the core leaves
# that to it) among them.
any_names = names | st.sampled_from(["bad name", "", "x" * 65, "f\n", "é", "a.b"]) | odd
schemas = st.sampled_from(
    [
        {"type": "object"},
        {"type": "object", "properties": {"a": {"type": "string", "description": 'é " \n'}}},
        {
            "type": "object",
            "properties": {
                "account": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "tags": {"type": "array"}},
                    "required": ["id"],
                },
                "limit": {"type": "integer", "minimum": 1, "maximum": 2**40},
                "ratio": {"type": "number", "multipleOf": 0.5},
            },
            "required": ["account"],
        },
    ]
)
cache_control = st.just({"type": "ephemeral"})
tool_defs = st.fixed_dictionaries(
    {"name": names, "input_schema": schemas},
    optional={
        "description": texts,
        "type": st.just("custom"),
        "cache_control": cache_control,
    },
)
tool_arrays = st.lists(tool_defs, min_size=1, max_size=3)
choices = st.fixed_dictionaries(
    {"type": st.sampled_from(["auto", "any", "none", "tool"])},
    optional={"name": names, "disable_parallel_tool_use": st.booleans()},
)
# What a tool's input holds, which the core writes as orjson does: any value orjson
# writes (floats at the edges of their forms among them) and, in bodies json.dumps
# writes, integers past 64 bits (floats to orjson).
exact_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | texts
    | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([-0.0, 0.5, 1e15, 1e16, 1e-7, 5e-324, 1.7976931348623157e308])
)
scalars = exact_scalars | st.integers(2**64, 2**80) | st.integers(-(2**80), -(2**63) - 1)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5) | texts, inner, max_size=3)
        ),
        max_leaves=10,
    )


exact_inputs = st.dictionaries(st.text(max_size=5) | texts, json_values(exact_scalars), max_size=4)
inputs = st.dictionaries(st.text(max_size=5), json_values(scalars), max_size=4)
ids = st.sampled_from(["toolu_1", "toolu_2", "x"])
text_blocks = st.fixed_dictionaries(
    {"type": st.just("text"), "text": texts}, optional={"cache_control": cache_control}
)


def tool_uses(
    input_values: st.SearchStrategy[Any], called: st.SearchStrategy[Any] = names
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": ids, "name": called},
        optional={"input": input_values, "cache_control": cache_control},
    )


thinking = st.fixed_dictionaries(
    {"type": st.just("thinking"), "thinking": texts}, optional={"signature": st.just("sig")}
) | st.just({"type": "redacted_thinking", "data": "opaque"})
tool_results = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": ids},
    optional={
        "content": texts | st.lists(text_blocks, max_size=3),
        "is_error": st.booleans() | st.none() | st.just(1),
        "cache_control": cache_control,
    },
)
assistant_turns = st.fixed_dictionaries(
    {
        "role": st.just("assistant"),
        "content": texts.filter(bool)
        | st.lists(text_blocks | tool_uses(inputs, any_names) | thinking, min_size=1, max_size=4),
    }
)
user_turns = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": texts.filter(bool)
        | st.lists(tool_results | text_blocks, min_size=1, max_size=4),
    }
)
agent_bodies = st.fixed_dictionaries(
    {
        "model": st.just("auto"),
        "max_tokens": st.integers(1, 99),
        "messages": st.lists(user_turns | assistant_turns, min_size=1, max_size=4),
    },
    optional={
        "system": texts | st.lists(text_blocks, max_size=2),
        "tools": tool_arrays | st.none() | st.just([]),
        "tool_choice": choices | st.none(),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "stop_sequences": st.lists(texts, max_size=3),
        "stream": st.booleans(),
        "metadata": st.just({"user_id": "u-1"}),
        "output_config": st.none(),
        "output_format": st.none(),
    },
)


@st.composite
def held_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Turns the core's reading holds, which it must take in: at most one text part a
    message, a tool choice the tools allow."""
    tools = draw(st.none() | tool_arrays)
    one_text = st.lists(text_blocks, max_size=1)
    messages = []
    for role in draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=4)):
        if role == "user":
            content: Any = draw(st.lists(tool_results, max_size=3)) + draw(one_text)
            content = draw(st.permutations(content)) if content else draw(texts.filter(bool))
        else:
            calls = draw(st.lists(tool_uses(exact_inputs), max_size=3))
            said = draw(one_text) if calls else [draw(text_blocks.filter(lambda b: b["text"]))]
            content = draw(st.permutations(calls + said + draw(st.lists(thinking, max_size=1))))
        messages.append({"role": role, "content": content})
    body: dict[str, Any] = {"model": "auto", "max_tokens": 64, "messages": messages}
    if tools is not None:
        body["tools"] = tools
        kind = draw(st.sampled_from(["auto", "any", "none", "tool", None]))
        if kind is not None:
            choice = {"type": kind} | ({"name": tools[-1]["name"]} if kind == "tool" else {})
            body["tool_choice"] = choice | draw(
                st.fixed_dictionaries({}, optional={"disable_parallel_tool_use": st.booleans()})
            )
    system = draw(st.none() | texts | st.lists(text_blocks, max_size=1))
    if system is not None:
        body["system"] = system
    return body


@st.composite
def near_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An agent's turn with one value somewhere replaced by an odd one, or with a block
    of a kind the core leaves to the parser (an image, several text parts) or reads (a
    float in a tool's input)."""
    body = draw(agent_bodies)
    where = draw(st.sampled_from(["body", "turn", "block", "extra"]))
    turn = draw(st.sampled_from(body["messages"]))
    if where == "body":
        body[draw(st.sampled_from(["model", "system", "tools", "tool_choice", "stream"]))] = draw(
            odd
        )
    elif where == "turn":
        turn[draw(st.sampled_from(["role", "content", "name"]))] = draw(odd)
    elif where == "block" and isinstance(turn["content"], list) and turn["content"]:
        block = draw(st.sampled_from(turn["content"]))
        key = draw(
            st.sampled_from(
                ["type", "text", "id", "name", "input", "tool_use_id", "content", "citations"]
            )
        )
        block[key] = draw(odd | st.sampled_from(["tool_use", "tool_result", "image", "text"]))
    else:
        extra = draw(
            st.sampled_from(
                [
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {"type": "text", "text": "a second part"},
                    {"type": "tool_use", "id": "t", "name": "get", "input": {"n": 2.5}},
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]},
                ]
            )
        )
        if isinstance(turn["content"], list):
            turn["content"].append(extra)
        else:
            body["output_config"] = {"format": {"type": "json_schema", "schema": {}}}
    return body


DEP = DeploymentConfig(provider="p", model="gpt-x", tier="t", price=Price(input=1, output=1))
POLICIES = [SafetyPolicy(), SafetyPolicy(default="off", kinds={"injection": "log"})]
tenants = st.sampled_from(["default", "t", "é\x00x"])


def reference(raw: bytes) -> Any:
    return parser_reading(parse_anthropic_request, raw)


def check(raw: bytes, tenant: str = "t") -> ChatRequest | None:
    """The request the core took in, if it did, having checked everything the request
    side computes of it against the general path."""
    got = ingest_plain_anthropic_request(raw, Idempotency.scope(tenant, "anthropic"))
    if got is None:
        return None
    chat, key, known = got
    ref = reference(raw)
    assert chat == ref
    # -0.0 and 0.0 apart, 1 and 1.0 apart (a PlainChatRequest's repr says so; its fields
    # are a ChatRequest's)
    assert repr(chat).removeprefix("Plain") == repr(ref)
    assert key == Idempotency.key(raw, tenant, "anthropic", ref.stream, None)
    assert known == _known(ref, "anthropic")
    texts = chat.scan_texts  # the core's reading, when it holds the messages
    if texts is not None:
        assert sorted(t for _, t in texts if t) == sorted(
            [p.text for m in ref.messages for p in m.parts if isinstance(p, TextPart) and p.text]
            + [c.arguments for m in ref.messages for c in m.tool_calls]
        )
    for compatible in (False, True):
        for stream in (False, True):
            # The reference was parsed from the dict: no core reading.
            assert openai_body(chat, DEP, compatible=compatible, stream=stream) == openai_body(
                ref, DEP, compatible=compatible, stream=stream
            )
    for policy in POLICIES:
        assert request_findings(chat, policy) == request_findings(ref, policy)
    assert ingest_plain_anthropic_request(raw, None) is not None
    return chat


@settings(max_examples=600, deadline=None)
@given(held_bodies(), tenants)
def test_core_takes_in_every_turn_its_reading_holds(body: dict[str, Any], tenant: str) -> None:
    raw = orjson.dumps(body)
    assert not isinstance(reference(raw), tuple), reference(raw)
    chat = check(raw, tenant)
    assert chat is not None and chat.scan_texts is not None
    assert check(raw, tenant) == chat  # again: the tools from the memos


@settings(max_examples=800, deadline=None)
@given(agent_bodies | near_bodies(), st.booleans(), tenants)
def test_core_reads_a_turn_only_as_the_parser_does(
    body: dict[str, Any], ascii_only: bool, tenant: str
) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    check(raw, tenant)
    check(raw, tenant)


@settings(max_examples=400, deadline=None)
@given(st.data(), tenants)
def test_core_reads_a_respelled_turn_only_as_the_parser_does(
    data: st.DataObject, tenant: str
) -> None:
    body = data.draw(held_bodies() | agent_bodies)
    check(spelled(data.draw, body, odd).encode(), tenant)


AGENT: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 64,
    "system": "You are a bank's support agent. Use the tools; never guess balances.",
    "tools": [
        {
            "name": "list_transactions",
            "description": "List an account's transactions.",
            "input_schema": {
                "type": "object",
                "properties": {"account_id": {"type": "string"}, "since": {"type": "string"}},
                "required": ["account_id"],
            },
        },
        {"name": "get_card", "input_schema": {"type": "object"}},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "messages": [
        {"role": "user", "content": "Why was I charged twice on my card last week?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Look it up.", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "list_transactions",
                    "input": {"account_id": "a-17", "filter": {"merchant": 'Café "Ü"'}},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": '[{"id":"t1","amount":12},{"id":"t2","amount":12}]',
                },
                {"type": "text", "text": "The coffee one, twice."},
            ],
        },
    ],
}


@settings(max_examples=600, deadline=None)
@given(mutated([AGENT]), tenants)
def test_mutated_turns_never_raise_from_the_core(body: dict[str, Any], tenant: str) -> None:
    try:
        raw = orjson.dumps(body)
    except TypeError:  # an integer past 64 bits: orjson cannot write it
        raw = json.dumps(body).encode()
    check(raw, tenant)
    # Not JSON, cut short, not an object: left alone, never raised.
    for cut in (raw[: len(raw) // 2], raw + b"}", b"[" + raw + b"]", raw.replace(b'"', b"'", 1)):
        assert ingest_plain_anthropic_request(cut, "t\x00anthropic\x00") is None


@pytest.mark.parametrize("stream", [False, True])
def test_an_agents_turn_is_taken_in_by_the_core(stream: bool) -> None:
    raw = orjson.dumps(AGENT | {"stream": stream})
    chat = check(raw)
    assert chat is not None and chat.toolset is not None and chat.tool_forms is not None
    assert chat.plain is None and chat.turn_messages is not None
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "user"]
    assert chat.messages[2].tool_calls[0].arguments == (
        '{"account_id":"a-17","filter":{"merchant":"Café \\"Ü\\""}}'
    )
    assert (chat.tool_choice, chat.parallel_tool_calls) == ("auto", False)
    again = check(raw)
    assert again is not None and again.toolset is chat.toolset  # a hit
    assert TOOLSETS.get(orjson.dumps(AGENT["tools"])) is chat.toolset


def test_a_first_turn_keeps_the_plain_reading() -> None:
    """Tools and text turns only (an agent's first turn): the provider body is written
    from the plain reading, as for a plain body."""
    raw = orjson.dumps(AGENT | {"messages": AGENT["messages"][:1], "tool_choice": {"type": "any"}})
    chat = check(raw)
    assert chat is not None and chat.plain_texts is not None and chat.tools
    assert chat.tool_choice == "required"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "tools.0.name"),
        ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        # Unhashable: refused by name, not a TypeError (a 500) from the set of names.
        ({"tool_choice": {"type": "tool", "name": ["get_card"]}}, "tool_choice.name"),
        ({"tool_choice": {"type": "any"}, "tools": None}, "tool_choice"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": {}}, "tools"),
    ],
)
def test_a_refused_turn_gets_the_parsers_400(change: dict[str, Any], param: str) -> None:
    """The core declines it (its tools or tool choice read here are refused), and the
    parser names the field as it always did."""
    raw = orjson.dumps(AGENT | change)
    for _ in range(2):
        assert ingest_plain_anthropic_request(raw, None) is None
    refused = reference(raw)
    assert refused[0] == "refused" and refused[2] == param


@pytest.mark.parametrize(
    "message",
    [
        # Several text parts in one message.
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "tool_use", "id": "t", "name": "get_card"},
                {"type": "text", "text": "b"},
            ],
        },
        # An image.
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
            ],
        },
    ],
)
def test_what_the_reading_cannot_hold_is_the_parsers(message: dict[str, Any]) -> None:
    raw = json.dumps(AGENT | {"messages": [message]}).encode()
    assert not isinstance(reference(raw), tuple)  # the parser reads it
    assert ingest_plain_anthropic_request(raw, None) is None


def _called_with(number: str) -> bytes:
    call = {"type": "tool_use", "id": "t", "name": "get_card", "input": {"v": ["N"]}}
    raw = json.dumps(AGENT | {"messages": [{"role": "assistant", "content": [call]}]})
    return raw.replace('"N"', number).encode()


@pytest.mark.parametrize(
    ("number", "arguments"),
    [
        ("2.50", '{"v":[2.5]}'),
        ("-0.0", '{"v":[-0.0]}'),
        ("-0", '{"v":[0]}'),
        ("1E16", '{"v":[1e+16]}'),
        ("1e15", '{"v":[1000000000000000.0]}'),
        ("0.0000001", '{"v":[1e-7]}'),
        ("123456789.123456789", '{"v":[123456789.12345679]}'),
        ("18446744073709551616", '{"v":[1.8446744073709552e+19]}'),
        ("-9223372036854775809", '{"v":[-9.223372036854776e+18]}'),
    ],
)
def test_numbers_in_a_tools_input_are_written_as_orjson_writes_them(
    number: str, arguments: str
) -> None:
    """An agent's call with figures (an amount, a rate) is taken in by the core, its
    arguments the text the parser makes of them (`orjson.dumps` of what it read)."""
    chat = check(_called_with(number))
    assert chat is not None and chat.turn_messages is not None
    assert chat.messages[-1].tool_calls[0].arguments == arguments


@pytest.mark.parametrize("number", ["1e400", "-1E309"])
def test_a_number_past_a_floats_range_is_the_parsers_to_refuse(number: str) -> None:
    raw = _called_with(number)
    assert reference(raw) == ("not json",)
    assert ingest_plain_anthropic_request(raw, None) is None


# ------------------------------------------------------------------ through the sidecar


class Upstream:
    """An OpenAI-compatible provider that keeps the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def chat(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Refunded."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 60, "completion_tokens": 2, "total_tokens": 62},
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningServer, Upstream]]:
    background = Loop()
    upstream = Upstream()
    runner, port = background.run(serve(upstream.chat))
    monkeypatch.setenv("UPSTREAM_URL", f"http://127.0.0.1:{port}/v1")
    config = load_config(REPO / "examples" / "overhead.yaml")
    server: RunningServer = background.run(start_server(config, port=0, admin_port=0))
    try:
        yield server, upstream
    finally:
        background.run(server.stop())
        background.run(runner.cleanup())
        background.close()


def test_an_sdk_agent_turn_sends_the_provider_what_the_parser_sends(
    served: tuple[RunningServer, Upstream],
) -> None:
    """The Anthropic SDK's agent turn, read by the core, answers; the same turn with a
    member the core leaves to the parser (and the parser ignores: the request is the
    same) sends the provider the same body."""
    server, upstream = served
    client = anthropic.Anthropic(base_url=server.url, api_key="app-key", max_retries=0)
    aside = json.loads(json.dumps(AGENT))
    aside["messages"][1]["content"][1]["citations"] = []  # ignored by the parser
    assert ingest_plain_anthropic_request(orjson.dumps(AGENT), None) is not None
    assert ingest_plain_anthropic_request(orjson.dumps(aside), None) is None
    try:
        for body in (AGENT, aside):
            msg = client.messages.create(
                model=body["model"],
                max_tokens=body["max_tokens"],
                system=body["system"],
                tools=body["tools"],
                tool_choice=body["tool_choice"],
                messages=body["messages"],
            )
            assert msg.content[0].type == "text" and msg.content[0].text == "Refunded."
    finally:
        client.close()
    read_by_core, read_by_parser = upstream.bodies
    assert read_by_core == read_by_parser
    sent = orjson.loads(read_by_core)
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
