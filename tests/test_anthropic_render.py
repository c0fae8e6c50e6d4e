"""The Anthropic surface's answer written by the core against the dict path: the same
bytes as ``orjson.dumps(render_anthropic_message(...))`` for any completion, or the
same error; the core writes every answer of text alone whose values orjson takes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate import _core
from tiergate.providers.base import Completion, ToolCall, Usage
from tiergate.server.render_anthropic import (
    STOP_REASON,
    anthropic_message_body,
    render_anthropic_message,
)

texts = st.text() | st.sampled_from(["", 'q"\\\n\x01\x1f\x7fé日本/\u2028😀'])
odd_texts = st.sampled_from(["\ud800", "a\udfffb"])  # orjson refuses them
counts = st.integers(0, 10**6) | st.integers(-(2**70), 2**70) | st.booleans()
completions = st.builds(
    Completion,
    text=st.none() | texts | odd_texts,
    finish_reason=st.sampled_from(sorted(STOP_REASON)),
    usage=st.builds(Usage, counts, counts, counts, st.integers(0, 9)),
    model=texts,
    tool_calls=st.just([]) | st.just([ToolCall("t1", "f", '{"a": 1}')]),
    refusal=st.none() | texts,
)


def dict_path(c: Completion, message_id: str, model: str) -> Any:
    try:
        return orjson.dumps(render_anthropic_message(c, message_id, model))
    except TypeError as exc:  # orjson's JSONEncodeError
        return ("refused", type(exc))


@settings(max_examples=1000, deadline=None)
@given(completions, texts, texts)
def test_the_core_writes_what_orjson_writes(c: Completion, message_id: str, model: str) -> None:
    try:
        got: Any = anthropic_message_body(c, message_id, model)
    except TypeError as exc:
        got = ("refused", type(exc))
    assert got == dict_path(c, message_id, model)


@settings(max_examples=500, deadline=None)
@given(
    st.none() | texts,
    texts,
    texts,
    st.sampled_from(sorted(STOP_REASON)),
    st.integers(0, 2**62),
    st.integers(0, 2**62),
    st.integers(0, 2**62),
)
def test_an_answer_of_text_is_written_by_the_core(
    text: str | None,
    message_id: str,
    model: str,
    reason: Any,
    input_tokens: int,
    output_tokens: int,
    cached: int,
) -> None:
    c = Completion(text, reason, Usage(input_tokens, output_tokens, cached, 0), model)
    written = _core.render_anthropic_message(
        message_id, model, text, STOP_REASON[reason], input_tokens, output_tokens, cached
    )
    assert written == orjson.dumps(render_anthropic_message(c, message_id, model))


@pytest.mark.parametrize(
    ("text", "counts", "error"),
    [
        ("x", (True, 1, 0), TypeError),
        ("x", (2**64, 1, 0), OverflowError),
        ("\ud800", (1, 1, 0), ValueError),
        (7, (1, 1, 0), TypeError),
    ],
)
def test_values_orjson_writes_otherwise_are_refused(
    text: Any, counts: tuple[Any, Any, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        _core.render_anthropic_message("i", "m", text, "end_turn", *counts)
