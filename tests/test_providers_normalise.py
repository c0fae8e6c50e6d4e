"""The normaliser: stop reasons, error classes, Retry-After, SSE, JSON output, usage."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate.envelope import ResponseFormat, ToolCall
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers.base import StreamEnd, TextDelta, ToolCallDelta, Usage
from tiergate.providers.normalise import (
    FINISH_REASONS,
    SSEEvent,
    SSEParser,
    StreamCollector,
    args_to_json,
    args_to_object,
    classify_http_error,
    extract_json_text,
    finish_reason,
    parse_duration,
    parse_retry_after,
    provider_error_from_body,
    scrub,
    usage_anthropic,
    usage_bedrock,
    usage_gemini,
    usage_openai,
    validate_json_output,
)

# ---------------------------------------------------------------- stop reasons


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("eos_token", "stop"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_finish_reason(raw: str | None, canonical: str) -> None:
    assert finish_reason(raw) == canonical


def test_finish_reason_table_values_are_canonical() -> None:
    assert set(FINISH_REASONS.values()) == {"stop", "length", "tool_calls", "content_filter"}


# ---------------------------------------------------------------- error classes


@pytest.mark.parametrize(
    ("status", "kinds", "message", "cls"),
    [
        (408, (), "", ErrorClass.TIMEOUT),
        (504, (), "", ErrorClass.TIMEOUT),
        (429, (), "", ErrorClass.RATE_LIMITED),
        (503, (), "", ErrorClass.OVERLOADED),
        (529, ("overloaded_error",), "Overloaded", ErrorClass.OVERLOADED),
        (500, (), "", ErrorClass.SERVER_ERROR),
        (502, (), "", ErrorClass.SERVER_ERROR),
        (401, (), "", ErrorClass.AUTH),
        (403, (), "", ErrorClass.AUTH),
        (404, (), "model not found", ErrorClass.SERVER_ERROR),
        (413, ("request_too_large",), "", ErrorClass.CONTEXT_LENGTH),
        (400, ("context_length_exceeded",), "", ErrorClass.CONTEXT_LENGTH),
        (
            400,
            ("invalid_request_error",),
            "prompt is too long: 210000 tokens > 200000 maximum",
            ErrorClass.CONTEXT_LENGTH,
        ),
        (
            400,
            ("INVALID_ARGUMENT",),
            "The input token count (1200000) exceeds the maximum number of tokens allowed",
            ErrorClass.CONTEXT_LENGTH,
        ),
        (400, ("content_policy_violation",), "", ErrorClass.CONTENT_POLICY),
        (
            400,
            (),
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            ErrorClass.CONTENT_POLICY,
        ),
        (400, ("invalid_request_error",), "temperature: must be <= 2", ErrorClass.BAD_REQUEST),
        (422, (), "bad field", ErrorClass.BAD_REQUEST),
        (429, ("RESOURCE_EXHAUSTED",), "", ErrorClass.RATE_LIMITED),
        (503, ("UNAVAILABLE",), "", ErrorClass.OVERLOADED),
        (400, ("ThrottlingException",), "", ErrorClass.RATE_LIMITED),
        (
            400,
            ("ValidationException",),
            "Input is too long for requested model.",
            ErrorClass.CONTEXT_LENGTH,
        ),
        (400, ("ValidationException",), "Malformed input request", ErrorClass.BAD_REQUEST),
    ],
)
def test_classify_http_error(
    status: int, kinds: tuple[str, ...], message: str, cls: ErrorClass
) -> None:
    assert classify_http_error(status, kinds, message) is cls


def test_retryable_follows_class() -> None:
    assert classify_http_error(429).retryable
    assert classify_http_error(400, (), "context window exceeded").retryable
    assert not classify_http_error(400, (), "bad").retryable


def test_openai_429_body_and_headers() -> None:
    body = b'{"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}'
    err = provider_error_from_body(
        429,
        body,
        {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"},
        provider="openai",
    )
    assert err.error_class is ErrorClass.RATE_LIMITED
    assert err.retry_after_s == 360.0
    assert err.status == 429 and err.provider == "openai"
    assert "Rate limit reached" in err.message


def test_anthropic_overloaded_body() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    err = provider_error_from_body(529, body, {"retry-after": "3"}, provider="anthropic")
    assert err.error_class is ErrorClass.OVERLOADED
    assert err.retry_after_s == 3.0


def test_gemini_retry_info() -> None:
    body = b"""{"error": {"code": 429, "message": "Resource has been exhausted",
      "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"}]}}"""
    err = provider_error_from_body(429, body, {}, provider="gemini")
    assert err.error_class is ErrorClass.RATE_LIMITED
    assert err.retry_after_s == 27.0


def test_auth_error_never_echoes_the_key() -> None:
    key = "sk-live-abcdefghijklmnop1234"
    body = (
        b'{"error": {"message": "Incorrect API key provided: ' + key.encode() + b'", '
        b'"type": "invalid_request_error", "code": "invalid_api_key"}}'
    )
    err = provider_error_from_body(401, body, {}, provider="openai", secrets=(key,))
    assert err.error_class is ErrorClass.AUTH
    assert key not in err.message and key not in repr(err)


def test_scrub_removes_secrets_and_key_shapes() -> None:
    assert "hunter2" not in scrub("the key hunter2 is wrong", ["hunter2"])
    assert "sk-abcdef123456" not in scrub("key sk-abcdef123456 bad")
    assert len(scrub("x" * 2000)) <= 501


def test_non_json_error_body() -> None:
    err = provider_error_from_body(502, b"<html>Bad Gateway</html>", {}, provider="p")
    assert err.error_class is ErrorClass.SERVER_ERROR
    assert err.status == 502


# ---------------------------------------------------------------- Retry-After


def test_retry_after_seconds_and_ms() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


def test_openai_reset_headers_prefer_the_exhausted_limit() -> None:
    headers = {
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "1000",
    }
    assert parse_retry_after(headers) == 1.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("3", 3.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_rejects_garbage() -> None:
    assert parse_duration("soon") is None
    assert parse_duration("1x") is None
    assert parse_duration("") is None


# ---------------------------------------------------------------- SSE

_field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=30,
)
_event = st.tuples(
    st.sampled_from(["", "message_start", "content_block_delta", "ping"]),
    st.lists(_field_text, min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_event, max_size=8),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    comments=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    trailing_blank=st.booleans(),
)
def test_sse_any_chunking(
    events: list[tuple[str, list[str]]],
    newline: bytes,
    comments: bool,
    cuts: list[int],
    trailing_blank: bool,
) -> None:
    wire = b""
    expected = []
    for i, (name, lines) in enumerate(events):
        if comments:
            wire += b": keep-alive" + newline
        if name:
            wire += b"event: " + name.encode() + newline
        for line in lines:
            sep = b": " if (line.startswith(" ") or not i % 2) else b":"
            wire += b"data" + sep + line.encode() + newline
        if i < len(events) - 1 or trailing_blank:
            wire += newline
            expected.append(SSEEvent(name or "message", "\n".join(lines)))
        # else: an event the body ends inside is incomplete and never dispatched
    positions = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *positions], [*positions, len(wire)], strict=True)]
    parser = SSEParser()
    got = []
    for chunk in chunks:
        got.extend(parser.feed(chunk))
    got.extend(parser.finish())
    assert got == expected


@given(
    pieces=st.lists(
        st.sampled_from(
            [
                b"data: ",
                b"data:",
                b"event: e",
                b"\n",
                b"\n\n",
                b"\r",
                b": c",
                b"\xc3\xa9",
                b"ab",
                b"id: 1",
                b"\xc3",
                b"\xa9",
                b" ",
            ]
        ),
        max_size=40,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_sse_fast_path_matches_line_by_line(pieces: list[bytes], cuts: list[int]) -> None:
    """The whole-event fast path of ``feed`` gives what the line-by-line path gives."""
    wire = b"".join(pieces)
    positions = sorted({c % (len(wire) + 1) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *positions], [*positions, len(wire)], strict=True)]
    fast, slow = SSEParser(), SSEParser()
    got = [e for c in chunks for e in fast.feed(c)]
    want = [e for c in chunks for e in slow._feed_lines(c)]
    assert got == want


def test_sse_field_rules() -> None:
    parser = SSEParser()
    got = parser.feed(b"data:no-space\ndata:  two\nid: 7\nretry: 10\nbogus\n\n")
    assert got == [SSEEvent("message", "no-space\n two")]
    assert parser.feed(b"event: only-a-name\n\n") == []  # no data: nothing dispatched


# ---------------------------------------------------------------- JSON output

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}


def test_validate_json_schema() -> None:
    rf = ResponseFormat(kind="json_schema", schema=SCHEMA, name="weather")
    validate_json_output('{"city": "Paris", "temp": 21.5}', rf)
    with pytest.raises(ProviderError) as info:
        validate_json_output('{"city": "Paris"}', rf)
    assert info.value.error_class is ErrorClass.INVALID_OUTPUT
    assert info.value.retryable
    with pytest.raises(ProviderError, match="not valid JSON"):
        validate_json_output('{"city": "Paris", ', rf)
    with pytest.raises(ProviderError, match="at temp"):
        validate_json_output('{"city": "Paris", "temp": "warm"}', rf)
    with pytest.raises(ProviderError):
        validate_json_output(None, rf)


def test_validate_json_object_and_text() -> None:
    validate_json_output("anything at all", ResponseFormat())
    rf = ResponseFormat(kind="json_object")
    validate_json_output('{"a": 1}', rf)
    with pytest.raises(ProviderError, match="not a JSON object"):
        validate_json_output("[1, 2]", rf)


def test_extract_json_text() -> None:
    assert extract_json_text('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert extract_json_text('Here you go: {"a": 1} hope it helps') == '{"a": 1}'
    assert extract_json_text('  {"a": 1} ') == '{"a": 1}'


# ---------------------------------------------------------------- tool arguments, usage


def test_args_conversion() -> None:
    assert args_to_object('{"x": 1}') == {"x": 1}
    assert args_to_object("") == {}
    with pytest.raises(ProviderError) as info:
        args_to_object("[1]")
    assert info.value.error_class is ErrorClass.BAD_REQUEST
    assert args_to_json({"x": [1, "é"]}) == '{"x":[1,"é"]}'
    assert args_to_json(None) == "{}"
    assert args_to_json('{"already": "text"}') == '{"already": "text"}'


def test_usage_helpers() -> None:
    assert usage_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 20},
        }
    ) == Usage(100, 50, 64, 20)
    assert usage_anthropic(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 80,
            "cache_creation_input_tokens": 5,
            "output_tokens": 7,
        }
    ) == Usage(95, 7, 80, 0)
    u = usage_anthropic({"input_tokens": 10, "output_tokens": 1})
    usage_anthropic({"output_tokens": 42}, into=u)
    assert u == Usage(10, 42, 0, 0)
    assert usage_gemini(
        {
            "promptTokenCount": 120,
            "candidatesTokenCount": 30,
            "thoughtsTokenCount": 12,
            "cachedContentTokenCount": 100,
        }
    ) == Usage(120, 42, 100, 12)
    assert usage_bedrock(
        {"inputTokens": 20, "outputTokens": 9, "cacheReadInputTokens": 100, "totalTokens": 129}
    ) == Usage(120, 9, 100, 0)
    assert usage_openai(None) == Usage()


def test_stream_collector() -> None:
    c = StreamCollector()
    for ev in [
        TextDelta('{"a"'),
        ToolCallDelta(0, id="call_1", name="f"),
        ToolCallDelta(0, arguments='{"x":'),
        TextDelta(": 1}"),
        ToolCallDelta(0, arguments="1}"),
        StreamEnd("tool_calls", Usage(1, 2), "m"),
    ]:
        c.add(ev)
    c.validate(ResponseFormat(kind="json_object"))
    done = c.completion()
    assert done.text == '{"a": 1}'
    assert done.tool_calls == [ToolCall("call_1", "f", '{"x":1}')]
    assert done.finish_reason == "tool_calls"
    with pytest.raises(ProviderError, match="stream ended"):
        StreamCollector().completion()


def test_client_timeouts_are_interned_rounded_down_and_never_zero() -> None:
    from tiergate.providers._http import _MAX_TIMEOUTS, _TIMEOUTS, client_timeout

    t = client_timeout(2.0007)
    assert t.total == 2.0 and t.sock_connect is None
    assert client_timeout(2.0009) is t  # same millisecond: the same object
    assert client_timeout(2.0007, connect_only=True).total is None
    assert client_timeout(2.0007, connect_only=True).sock_connect == 2.0
    assert client_timeout(0.0002).total == 0.001  # aiohttp reads 0 as "no timeout"
    for i in range(5000):  # bounded table
        assert client_timeout(i / 1000 + 0.0005).total == max(i, 1) / 1000
    assert len(_TIMEOUTS) <= _MAX_TIMEOUTS
