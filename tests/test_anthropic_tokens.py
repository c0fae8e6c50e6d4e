"""The prompt-token estimate of an Anthropic Messages body: ``estimate_tokens`` of the
chat-completions body the same request would be (system prompt, tool calls and results,
tools, images, structured output), through the core's one-call reader and through the
general path alike, and what it changes in a plan: a long system prompt on
``/v1/messages`` no longer lands on a deployment whose context window it overflows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzing import spelled
from harness import Stack, fast_sim_config
from tiergate import _core
from tiergate.config import Config, RouteConfig
from tiergate.routing.planner import _known
from tiergate.server.parse_anthropic import ingest_plain_anthropic_request, parse_anthropic_request

texts = st.text(max_size=12) | st.sampled_from(
    ["", "Say hi.", "The quick brown fox, again and again.\n\n", 'q"\\\n\x01é日本/\u2028']
)
nonempty = texts.filter(bool)
cache_control = st.just({"type": "ephemeral"})
text_blocks = st.fixed_dictionaries(
    {"type": st.just("text"), "text": texts}, optional={"cache_control": cache_control}
)
image_blocks = st.sampled_from(
    [
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
    ]
)
tool_names = st.sampled_from(["get_weather", "now", "a-b_9"])
tool_ids = st.sampled_from(["toolu_1", "toolu_2"])
# Any JSON (integers past 64 bits too, which orjson reads as floats). Keys keep to the
# BMP: fuzzing.spelled escapes a key's characters as one \\u sequence each.
keys = st.text(st.characters(max_codepoint=0xFFFF, codec="utf-8"), max_size=6)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e-7, 0.1])
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
inputs = st.dictionaries(keys, json_values, max_size=4)
tool_use_blocks = st.fixed_dictionaries(
    {"type": st.just("tool_use"), "id": tool_ids, "name": tool_names},
    optional={"input": inputs},
)
tool_result_blocks = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": tool_ids},
    optional={
        "content": texts | st.lists(text_blocks, max_size=3),
        "is_error": st.booleans(),
    },
)
thinking_blocks = st.just({"type": "thinking", "thinking": "Let me see.", "signature": "s"})
user_turns = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": nonempty
        | st.lists(text_blocks | image_blocks | tool_result_blocks, min_size=1, max_size=4),
    }
)
assistant_turns = st.fixed_dictionaries(
    {
        "role": st.just("assistant"),
        "content": nonempty
        | st.lists(text_blocks | tool_use_blocks | thinking_blocks, min_size=1, max_size=4).filter(
            lambda bs: any(b["type"] == "tool_use" or b.get("text") for b in bs)
        ),
    }
)
schemas = st.sampled_from(
    [
        {"type": "object"},
        {"type": "object", "properties": {"city": {"type": "string", "enum": ["a", "b"]}}},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    ]
)
tools = st.fixed_dictionaries(
    {"name": tool_names, "input_schema": schemas},
    optional={"description": texts, "cache_control": cache_control},
)
structured = st.fixed_dictionaries({"type": st.just("json_schema"), "schema": schemas})
bodies = st.fixed_dictionaries(
    {
        "model": st.just("auto"),
        "max_tokens": st.integers(1, 99),
        "messages": st.lists(user_turns | assistant_turns, min_size=1, max_size=4),
    },
    optional={
        "system": st.none() | texts | st.lists(text_blocks, max_size=3),
        "tools": st.lists(tools, max_size=2),
        "tool_choice": st.just({"type": "auto"}),
        "output_config": st.fixed_dictionaries({}, optional={"format": structured}),
        "output_format": structured,
        "response_format": st.just({"type": "json_schema", "json_schema": {"schema": {}}}),
        "metadata": st.just({"user_id": "u-1"}),
        "stream": st.booleans(),
    },
)
# The usual body, which the core's one-call reader takes in.
plain_bodies = st.fixed_dictionaries(
    {
        "model": st.just("auto"),
        "max_tokens": st.integers(1, 99),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.just("user"),
                    "content": nonempty | st.lists(text_blocks, min_size=1, max_size=3),
                }
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "system": st.none() | texts | st.lists(text_blocks, max_size=3),
        "response_format": st.just({"type": "json_object"}),
        "stream": st.booleans(),
    },
)


def _parts(content: Any) -> Any:
    """Anthropic blocks as chat-completions content parts (a string stays one)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block["type"] == "image":
            parts.append({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
        elif block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]})
    return parts


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body the Anthropic request ``body`` would be (the rule of
    ``estimate_anthropic_tokens``), written here from the Anthropic body's dict."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _parts(system)})
    for turn in body["messages"]:
        role, content = turn["role"], turn["content"]
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        calls = []
        for block in content:
            if block["type"] == "tool_result":
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": block["tool_use_id"],
                        "content": _parts(block.get("content", "")),
                    }
                )
            elif block["type"] == "tool_use":
                arguments = orjson.dumps(block.get("input", {})).decode()
                calls.append(
                    {
                        "id": block["id"],
                        "type": "function",
                        "function": {"name": block["name"], "arguments": arguments},
                    }
                )
        own: dict[str, Any] = {"role": role, "content": _parts(content)}
        if calls:
            own["tool_calls"] = calls
        if role == "assistant" or own["content"]:
            messages.append(own)
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("tools"):
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t["input_schema"],
                },
            }
            for t in body["tools"]
        ]
    config = body.get("output_config")
    spec = config.get("format") if config is not None else body.get("output_format")
    if spec is not None:
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": spec["schema"], "strict": True},
        }
    return chat


def check_rule(raw: bytes) -> int:
    """The estimate of ``raw`` is the chat body's, whose messages are the ones the parser
    reads (role by role, the tool calls' arguments as it writes them); the general path's
    estimate is it. Returns it."""
    body = orjson.loads(raw)  # a repeated key's last value, as the core reads it
    got: int = _core.estimate_anthropic_tokens(raw)
    chat = chat_body(body)
    assert got == _core.estimate_tokens(orjson.dumps(chat))
    parsed = parse_anthropic_request(body, raw)
    assert [m["role"] for m in chat["messages"]] == [m.role for m in parsed.messages]
    calls = [c["function"] for m in chat["messages"] for c in m.get("tool_calls", [])]
    assert calls == [
        {"name": c.name, "arguments": c.arguments} for m in parsed.messages for c in m.tool_calls
    ]
    assert _known(parsed, "anthropic")[1] == got
    return got


@settings(max_examples=600, deadline=None)
@given(bodies, st.booleans())
def test_the_estimate_is_the_equivalent_chat_bodys(body: dict[str, Any], ascii_only: bool) -> None:
    # json: integers past 64 bits are valid JSON, which orjson reads as floats.
    check_rule(json.dumps(body, ensure_ascii=ascii_only).encode())


@st.composite
def respelled_bodies(draw: st.DrawFn) -> bytes:
    return spelled(draw, draw(bodies), json_values).encode()


@settings(max_examples=300, deadline=None)
@given(respelled_bodies())
def test_spelled_as_clients_might(raw: bytes) -> None:
    """Members in any order, repeated keys (the last counts, in tool inputs too),
    whitespace, escaped keys: the same estimate as the chat body of what was read."""
    check_rule(raw)


@settings(max_examples=400, deadline=None)
@given(plain_bodies, st.booleans())
def test_the_one_call_reader_gives_the_general_paths_estimate(
    body: dict[str, Any], ascii_only: bool
) -> None:
    raw = json.dumps(body).encode() if ascii_only else orjson.dumps(body)
    ingested = ingest_plain_anthropic_request(raw, None)
    assert ingested is not None
    _, _, (_, prompt_tokens) = ingested
    assert prompt_tokens == _known(parse_anthropic_request(orjson.loads(raw), raw), "anthropic")[1]
    assert prompt_tokens == check_rule(raw)


def test_the_system_prompt_counts() -> None:
    """The bug this estimate fixes: a system prompt of some 6,000 tokens was no token."""
    system = "Answer questions about card fees in two sentences, citing the schedule. " * 500
    raw = orjson.dumps(
        {
            "model": "auto",
            "max_tokens": 16,
            "system": system,
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )
    without = _core.estimate_anthropic_tokens(
        orjson.dumps(
            {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
        )
    )
    got = _core.estimate_anthropic_tokens(raw)
    # The system message: 3 framing, "system" and the text (each rounded here).
    assert abs(got - without - (3 + 1 + _core.estimate_text_tokens(system))) <= 1
    assert got > 5000
    ingested = ingest_plain_anthropic_request(raw, None)
    assert ingested is not None and ingested[2][1] == got
    with pytest.raises(ValueError, match="JSON object"):
        _core.estimate_anthropic_tokens(b"[]")
    with pytest.raises(ValueError):
        _core.estimate_anthropic_tokens(b'{"system": ')


# ------------------------------------------------------------------ through the sidecar
CHEAP, ROOMY = "gpt-4o-mini", "gpt-4o"


def _config() -> Config:
    """The cheaper deployment with a context window a long system prompt overflows."""
    base = fast_sim_config()
    windows = {CHEAP: 2_000, ROOMY: 128_000}
    deployments = {
        n: d.model_copy(update={"context_window": windows[n]})
        for n, d in base.deployments.items()
        if n in windows
    }
    return base.model_copy(
        update={"deployments": deployments, "routes": {"auto": RouteConfig(strategy="auto")}}
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(_config())
    yield s
    s.close()


TOOL = {"name": "get_fee", "description": "A fee by name.", "input_schema": {"type": "object"}}


@pytest.mark.parametrize("with_tools", [False, True], ids=["one-call reader", "general path"])
def test_a_long_system_prompt_skips_a_window_it_overflows(stack: Stack, with_tools: bool) -> None:
    """Real HTTP with the Anthropic SDK: a short system prompt is served by the cheaper
    deployment; one of some 6,000 tokens does not fit its 2,000-token window, so the
    roomier one serves, whether the core's one-call reader took the body in or (tools
    given) the parser read it."""
    long = "Answer questions about card fees in two sentences, citing the schedule. " * 500
    extra: dict[str, Any] = {"tools": [TOOL]} if with_tools else {}
    with anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0) as client:
        served = []
        for i, system in enumerate(["Be brief.", long, [{"type": "text", "text": long}]]):
            raw = client.messages.with_raw_response.create(
                model="auto",
                max_tokens=16,
                system=system,  # type: ignore[arg-type]
                messages=[{"role": "user", "content": f"What is the late fee? {i} {with_tools}"}],
                **extra,
            )
            assert raw.parse().content
            served.append(raw.headers["x-tiergate-deployment"])
    assert served == [CHEAP, ROOMY, ROOMY]


def test_explain_reads_a_messages_body_on_the_anthropic_surface(stack: Stack) -> None:
    """``POST /v1/messages/route/explain`` takes the body the Anthropic SDK sends, counts
    its system prompt (the cheaper window fails on context) and answers a bad body in
    the Anthropic error shape."""
    long = "Answer questions about card fees in two sentences, citing the schedule. " * 500
    body = {"model": "auto", "max_tokens": 16, "system": long, "messages": [{"role": "user", "content": "Fee?"}]}  # fmt: skip
    with anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0) as client:
        explained = client.post("/v1/messages/route/explain", body=body, cast_to=object)
    assert isinstance(explained, dict)
    verdicts = {c["deployment"]: c["failed"] for c in explained["candidates"]}
    assert "context" in verdicts[CHEAP] and verdicts[ROOMY] == []
    assert explained["request"]["prompt_tokens"] > 2_000
    assert explained["plan"][0] == ROOMY
    # The same conversation as a chat body is read as one on the OpenAI path.
    chat = {"model": "auto", "max_tokens": 16, "messages": [{"role": "system", "content": long}, {"role": "user", "content": "Fee?"}]}  # fmt: skip
    as_chat = orjson.loads(stack.post("/v1/route/explain", chat).data)
    assert as_chat["request"]["prompt_tokens"] == explained["request"]["prompt_tokens"]
    bad = stack.post("/v1/messages/route/explain", {"model": "auto", "messages": []})
    assert bad.status == 400
    error = orjson.loads(bad.data)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]
