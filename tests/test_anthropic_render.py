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
from tiergate.envelope import ToolCall
from tiergate.providers.base import (
    Completion,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tiergate.server.render_anthropic import (
    STOP_REASON,
    AnthropicStreamRenderer,
    _usage,
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


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class DictRenderer:
    """The stream renderer as it was, every frame dumped from its dicts: the oracle of
    the bytes of :class:`AnthropicStreamRenderer`."""

    __slots__ = ("_message_id", "_model", "_next", "_open", "_open_kind", "_started", "_tools")

    def __init__(self, message_id: str, model: str) -> None:
        self._message_id = message_id
        self._model = model
        self._started = False
        self._next = 0  # index the next content block gets
        self._open = -1  # index of the open block, -1 when none
        self._open_kind = ""
        self._tools: dict[int, int] = {}  # canonical tool-call index → block index

    def _start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message}) + _event(
            "ping", {"type": "ping"}
        )

    def _close(self) -> bytes:
        if self._open < 0:
            return b""
        index, self._open = self._open, -1
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open, self._open_kind = self._next, kind
        self._next += 1
        return out + _event(
            "content_block_start",
            {"type": "content_block_start", "index": self._open, "content_block": block},
        )

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def render(self, event: StreamEvent) -> bytes:
        out = b"" if self._started else self._start()
        if isinstance(event, TextDelta):
            if self._open < 0 or self._open_kind != "text":
                out += self._begin("text", {"type": "text", "text": ""})
            return out + self._delta(self._open, {"type": "text_delta", "text": event.text})
        if isinstance(event, StreamEnd):
            if event.refusal:
                out += self.render(TextDelta(event.refusal))
            out += self._close()
            delta = {"stop_reason": STOP_REASON[event.finish_reason], "stop_sequence": None}
            out += _event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": _usage(event.usage)},
            )
            return out + _event("message_stop", {"type": "message_stop"})
        if event.index not in self._tools:
            block = {
                "type": "tool_use",
                "id": event.id or "",
                "name": event.name or "",
                "input": {},
            }
            out += self._begin("tool", block)
            self._tools[event.index] = self._open
        if not event.arguments:
            return out
        index = self._tools[event.index]
        return out + self._delta(
            index, {"type": "input_json_delta", "partial_json": event.arguments}
        )


events = st.lists(
    st.builds(TextDelta, texts)
    | st.builds(
        ToolCallDelta,
        st.integers(0, 2),
        st.none() | texts,
        st.none() | texts,
        st.sampled_from(["", '{"a":', "1}"]),
    ),
    max_size=6,
)
ends = st.builds(
    StreamEnd,
    st.sampled_from(sorted(STOP_REASON)),
    st.builds(Usage, *[counts.filter(lambda n: -(2**63) <= n < 2**64)] * 3, st.integers(0, 9)),
    texts,
    st.none() | texts,
)


@settings(max_examples=500, deadline=None)
@given(texts, texts, events, st.none() | ends)
def test_the_stream_is_rendered_as_its_dicts_are(
    message_id: str, model: str, stream: list[StreamEvent], end: StreamEnd | None
) -> None:
    if end is not None:
        stream = [*stream, end]
    fast, slow = AnthropicStreamRenderer(message_id, model), DictRenderer(message_id, model)
    for event in stream:
        assert fast.render(event) == slow.render(event)


def test_an_odd_count_fails_as_it_did() -> None:
    end = StreamEnd("stop", Usage(2**64, 1, 0, 0), "m")
    for renderer in (AnthropicStreamRenderer("i", "m"), DictRenderer("i", "m")):
        with pytest.raises(TypeError):
            renderer.render(end)
