"""The core's reading and writing of OpenAI chat completions against the Python
reference (``orjson.loads`` + ``parse_openai_response``; ``render_openai_completion`` +
``orjson.dumps``): the same Completion, error or bytes for any body."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate import _core
from tiergate.errors import ProviderError
from tiergate.providers._http import json_body
from tiergate.providers.base import Completion, Usage
from tiergate.providers.normalise import FINISH_REASONS
from tiergate.providers.openai import completion_from_body, parse_openai_response
from tiergate.server.render_openai import openai_completion_body, render_openai_completion


def reference(raw: bytes) -> Completion | tuple[str, str]:
    try:
        return parse_openai_response(json_body(raw, "prov"), provider="prov")
    except ProviderError as exc:
        return ("error", exc.message)
    except (AttributeError, TypeError) as exc:  # the Python parser's own failures
        return ("crash", type(exc).__name__)


def core(raw: bytes) -> Completion | tuple[str, str]:
    try:
        return completion_from_body(raw, "prov")
    except ProviderError as exc:
        return ("error", exc.message)
    except (AttributeError, TypeError) as exc:
        return ("crash", type(exc).__name__)


texts = st.text(max_size=10) | st.sampled_from(["", 'q"\\\n\x01é日本/'])
odd = st.none() | st.integers(-2, 2) | st.booleans() | st.just([]) | st.just({"a": 1}) | texts
calls = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": texts | odd,
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {}, optional={"name": texts | odd, "arguments": texts | odd}
            )
            | odd,
        },
    )
    | odd,
    max_size=2,
)
messages = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "content": st.none() | texts | odd,
        "refusal": st.none() | texts | odd,
        "tool_calls": calls | odd,
    },
)
counts = st.integers(-1, 2**62) | odd
usages = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": counts,
        "completion_tokens": counts,
        "total_tokens": counts,
        "prompt_tokens_details": st.fixed_dictionaries({}, optional={"cached_tokens": counts})
        | odd,
        "completion_tokens_details": st.fixed_dictionaries(
            {}, optional={"reasoning_tokens": counts}
        )
        | odd,
    },
)
choices = st.lists(
    st.fixed_dictionaries(
        {"index": st.just(0)},
        optional={
            "message": messages | odd,
            "finish_reason": st.none() | st.sampled_from([*FINISH_REASONS, "weird"]) | odd,
            "logprobs": st.none(),
        },
    )
    | odd,
    max_size=2,
)
docs = st.fixed_dictionaries(
    {"object": st.just("chat.completion"), "created": st.just(0)},
    optional={
        "id": texts | odd,
        "model": texts | odd,
        "choices": choices | odd,
        "usage": usages | odd,
    },
)


good_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": texts,
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": texts, "arguments": texts}),
        }
    ),
    max_size=2,
)
good_counts = st.integers(0, 2**40)
# Documents the core reads itself (no fallback), so that a misreading shows.
good_docs = st.fixed_dictionaries(
    {
        "id": texts,
        "object": st.just("chat.completion"),
        "model": texts,
        "choices": st.tuples(
            st.fixed_dictionaries(
                {
                    "index": st.just(0),
                    "message": st.fixed_dictionaries(
                        {"role": st.just("assistant"), "content": st.none() | texts},
                        optional={"refusal": st.none() | texts, "tool_calls": good_calls},
                    ),
                    "finish_reason": st.sampled_from(["stop", "length", "tool_calls"]),
                }
            )
        ).map(list),
        "usage": st.fixed_dictionaries(
            {"prompt_tokens": good_counts, "completion_tokens": good_counts},
            optional={
                "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": good_counts}),
                "completion_tokens_details": st.fixed_dictionaries(
                    {"reasoning_tokens": good_counts}
                ),
            },
        ),
    }
)


def respell(draw: st.DrawFn, text: str) -> str:
    """The same document spelled otherwise (escaped keys, whitespace), or with
    duplicate members (the last one counts, as ``orjson.loads`` has it)."""
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=4, unique=True)):
        member = f'"{key}": '
        if member not in text:
            continue
        how = draw(st.sampled_from(["escaped", "dup-before", "dup-after", "spaced"]))
        junk = draw(st.sampled_from(["7", "null", '{"x": [1, {}]}', '"s"', "[]", "{}"]))
        at = text.index(member)
        if how == "escaped":
            text = text.replace(member, f'"\\u{ord(key[0]):04x}{key[1:]}": ', 1)
        elif how == "dup-before":
            text = f"{text[:at]}{member}{junk}, {text[at:]}"
        elif how == "dup-after":
            # After the member's value: a scalar or a string runs to the next `, "` or
            # closing bracket of the same object only when it holds none (texts here
            # may), so the junk goes after the value's end as json.loads finds it.
            value_at = at + len(member)
            _, end = json.JSONDecoder().raw_decode(text, value_at)
            text = f"{text[:end]}, {member}{junk}{text[end:]}"
        else:
            text = text.replace(member, f'"{key}"\n\t :\r\n ', 1)
    return text


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["doc"] * 10 + ["good"] * 10 + ["junk", "list", "error"]))
    if kind == "junk":
        return b"{not json"
    if kind == "list":
        return b"[1, 2]"
    if kind == "error":
        return b'{"error": {"message": "boom"}}'
    doc = draw(docs if kind == "doc" else good_docs)
    return respell(draw, json.dumps(doc, ensure_ascii=draw(st.booleans()))).encode()


_KEYS = [
    "choices",
    "message",
    "content",
    "refusal",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "cached_tokens",
    "reasoning_tokens",
    "model",
]


@settings(max_examples=1500, deadline=None)
@given(bodies())
def test_core_reading_matches_the_python_parser(raw: bytes) -> None:
    assert core(raw) == reference(raw)


def test_the_usual_answer_is_read_by_the_core() -> None:
    raw = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 60, "completion_tokens": 2, "total_tokens": 62},
        }
    )
    fields = _core.read_openai_completion(raw)
    assert fields is not None
    assert fields[:10] == (
        "Hello.", "stop", 60, 2, 0, 0, "bench-model", [], None, "chatcmpl-1"
    )  # fmt: skip
    assert fields[10] is not None and fields[10].startswith(b',"model":"bench-model"')


tool_lists = st.lists(st.tuples(texts, texts, texts), max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    st.none() | texts,
    st.none() | texts,
    tool_lists,
    st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    st.tuples(*[st.integers(-(2**62), 2**62)] * 4),
    texts,
)
def test_core_writing_matches_the_dict_and_orjson(
    text: str | None,
    refusal: str | None,
    tools: list[tuple[str, str, str]],
    reason: Any,
    counts: tuple[int, int, int, int],
    model: str,
) -> None:
    from tiergate.envelope import ToolCall

    c = Completion(text, reason, Usage(*counts), "up", [ToolCall(*t) for t in tools], refusal)
    expected = orjson.dumps(render_openai_completion(c, "chatcmpl-x", model))
    created = orjson.loads(expected)["created"]
    got = _core.render_openai_completion(
        "chatcmpl-x", model, created, text, refusal, tools, reason, *counts
    )
    assert got == expected


@pytest.mark.parametrize(
    "usage",
    [Usage(True, 2), Usage(2**64, 1), Usage(-(2**63), -1)],  # type: ignore[arg-type]
)
def test_odd_counts_go_through_the_dict(usage: Usage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: 1700000000.0)
    c = Completion("hi", "stop", usage, "m")
    try:
        expected: bytes | type[Exception] = orjson.dumps(
            render_openai_completion(c, "chatcmpl-x", "m")
        )
    except TypeError as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = openai_completion_body(c, "chatcmpl-x", "m")
    except TypeError as exc:
        got = type(exc)
    assert got == expected


@settings(max_examples=500, deadline=None)
@given(bodies(), st.sampled_from(["chatcmpl-x", 'chatcmpl-"\n']))
def test_the_body_written_while_reading_matches_the_dict(raw: bytes, response_id: str) -> None:
    c = core(raw)
    if not isinstance(c, Completion) or c.openai_tail is None:
        return
    expected = orjson.dumps(render_openai_completion(c, response_id, c.model))
    created = orjson.loads(expected)["created"]
    assert _core.openai_completion_with_head(response_id, created, c.openai_tail) == expected


def test_an_answer_read_by_the_core_is_rendered_from_its_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = b'{"model":"m","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3}}'
    c = completion_from_body(raw, "prov")
    assert c.openai_tail is not None
    monkeypatch.setattr(
        _core, "render_openai_completion", lambda *a: pytest.fail("rendered from the fields")
    )
    before = int(time.time())
    got = openai_completion_body(c, "chatcmpl-x", "m")
    created = orjson.loads(got)["created"]
    assert before <= created <= int(time.time())  # the binding's clock is time.time()'s
    monkeypatch.undo()
    monkeypatch.setattr("time.time", lambda: float(created))
    assert got == orjson.dumps(render_openai_completion(c, "chatcmpl-x", "m"))
    # Another model name than the answer's: the tail does not hold it.
    assert orjson.loads(openai_completion_body(c, "chatcmpl-x", "n"))["model"] == "n"


_MESSAGE = '{"content": "a", "refusal": "r", "tool_calls": [{"id": "i", "function": {"name": "f", "arguments": "{}"}}]}'
_USAGE = '{"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 2}}'


@pytest.mark.parametrize(
    "raw",
    [
        # A later member replaces all an earlier one held, within it too.
        f'{{"choices": [{{"message": {_MESSAGE}}}], "choices": [{{"message": {{}}}}]}}',
        f'{{"choices": [{{"message": {_MESSAGE}}}], "choices": [{{"message": {{"x": 1}}}}]}}',
        f'{{"choices": [{{"message": {_MESSAGE}, "message": {{"x": 1}}}}]}}',
        f'{{"choices": [{{"message": {_MESSAGE}, "finish_reason": "length"}}], "choices": [{{"message": {{}}}}]}}',
        f'{{"choices": [{{"message": {_MESSAGE}}}], "choices": [5, {{"message": {_MESSAGE}}}]}}',
        f'{{"choices": [{{"message": {{"x": 1}}}}, {{"message": {_MESSAGE}}}]}}',
        f'{{"choices": [{{"message": {{}}}}], "usage": {_USAGE}, "usage": {{"x": 1}}}}',
        f'{{"choices": [{{"message": {{}}}}], "usage": {_USAGE}, "usage": 0}}',
        f'{{"choices": [{{"message": {{}}}}], "usage": {_USAGE[:-1]}, "prompt_tokens_details": {{}}}}}}',
        f'{{"choices": [{{"message": {{}}}}], "usage": {_USAGE[:-1]}, "prompt_tokens_details": [1]}}}}',
        f'{{"choices": [{{"message": {{}}}}], "usage": {_USAGE[:-1]}, "completion_tokens_details": {{"x": 1}}}}}}',
        f'{{"choices": [{{"message": {{}}}}], "usage": {_USAGE[:-1]}, "prompt_tokens": 9}}}}',
        f'{{"choices": [{{"message": {_MESSAGE}}}], "choices": {{}}}}',
    ],
)
def test_later_members_replace_earlier_ones(raw: str) -> None:
    assert core(raw.encode()) == reference(raw.encode())
