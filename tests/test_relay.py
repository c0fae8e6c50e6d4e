"""The core's OpenAI stream relay against its pure-Python reference: the SSE parser, the
OpenAI stream parser and the OpenAI stream renderer composed as the server composes
them. Same frames, text, delivered count, end and error on any stream, split anywhere."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import serve
from tiergate import _core
from tiergate.config import ProviderConfig
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers._http import HttpAdapter
from tiergate.providers.base import StreamEnd, TextDelta
from tiergate.providers.normalise import FINISH_REASONS, SSEParser
from tiergate.providers.openai import OpenAIAdapter, OpenAIStreamParser
from tiergate.providers.registry import make_adapter
from tiergate.providers.relay import RelayStream, relay_error
from tiergate.server.render_openai import OpenAIStreamRenderer

Outcome = tuple[bytes, str, int, Any, Any]


def through_parser(chunks: list[bytes], renderer: Any) -> Outcome:
    """The canonical-event path of ``chunks``: the Python parser, then ``renderer``
    (either surface's): frames, text, deltas, end facts, error."""
    sse, parser = SSEParser(), OpenAIStreamParser("prov", "dep-model")
    out, pieces = b"", []
    end: StreamEnd | None = None
    error: ProviderError | None = None

    def render(events: list[Any]) -> None:
        nonlocal out, end
        for e in events:
            out += renderer.render(e)
            if isinstance(e, TextDelta):
                pieces.append(e.text)
            if isinstance(e, StreamEnd):
                end = e

    try:
        for chunk in chunks:
            for event in sse.feed(chunk):
                render(parser.feed(event))
                if parser.done:
                    break
            if parser.done:
                break
        else:
            sse.finish()
            render(parser.finish())
    except ProviderError as exc:
        error = exc
    ends = (end.finish_reason, *_usage(end), end.model) if end is not None else None
    errs = (error.error_class, error.message) if error is not None else None
    return out, "".join(pieces), len(pieces), ends, errs


def reference(chunks: list[bytes], include_usage: bool) -> tuple[Outcome, int]:
    renderer = OpenAIStreamRenderer("chatcmpl-x", "dep-model", include_usage)
    return through_parser(chunks, renderer), renderer._base["created"]  # type: ignore[return-value]


def _usage(end: StreamEnd) -> tuple[int, int, int, int]:
    u = end.usage
    return (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens)


def through_relay(chunks: list[bytes], relay: _core.OpenAIRelay) -> Outcome:
    """``chunks`` through ``relay`` (begun for either surface), as ``through_parser``
    gives them."""
    out = b""
    for chunk in chunks:
        relay.feed(chunk)
        out += relay.render()
        if relay.stopped:
            break
    else:
        relay.finish()
        out += relay.render()
    failure = relay.failure
    error = relay_error(failure, "prov") if failure is not None else None
    errs = (error.error_class, error.message) if error is not None else None
    return out, relay.text, relay.delivered, relay.end, errs


def relayed(chunks: list[bytes], include_usage: bool, created: int) -> Outcome:
    relay = _core.OpenAIRelay("dep-model")
    relay.begin("chatcmpl-x", "dep-model", created, include_usage)
    return through_relay(chunks, relay)


def check(chunks: list[bytes], include_usage: bool = True) -> None:
    expected, created = reference(chunks, include_usage)
    assert relayed(chunks, include_usage, created) == expected


texts = st.text(max_size=12) | st.sampled_from(["", "Hel", 'q"\\\n\t\x01\u2028é日本/'])
reasons = st.none() | st.sampled_from([*FINISH_REASONS, "weird", ""])
tool_calls = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            # Absent or null: placed by the id or the last delta (Gemini, Ollama).
            "index": st.none() | st.integers(0, 3),
            "id": st.none() | texts | st.sampled_from(["c1", "c2"]),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {}, optional={"name": st.none() | texts, "arguments": st.none() | texts}
            ),
        },
    ),
    max_size=2,
)
deltas = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": st.none() | texts,
        "refusal": st.none() | texts,
        "tool_calls": tool_calls,
    },
)
choices = st.lists(
    st.fixed_dictionaries(
        {"delta": deltas},
        optional={"index": st.sampled_from([0, 0, 1, 0.0]), "finish_reason": reasons},
    ),
    max_size=2,
)
counts = st.integers(-1, 2**40)
usages = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": counts,
        "completion_tokens": counts | st.just(1.5),
        "prompt_tokens_details": st.none() | st.fixed_dictionaries({"cached_tokens": counts}),
        "completion_tokens_details": st.fixed_dictionaries({"reasoning_tokens": counts}),
    },
)
chunk_objects = st.fixed_dictionaries(
    {"id": st.just("up-1"), "object": st.just("chat.completion.chunk")},
    optional={"model": st.none() | texts, "choices": choices, "usage": st.none() | usages},
)
errors = st.fixed_dictionaries(
    {"message": texts},
    optional={"type": st.sampled_from(["server_error", "rate_limit_exceeded"])},
)


@st.composite
def payloads(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["chunk"] * 12 + ["done", "error", "junk", "list"]))
    if kind == "done":
        return "[DONE]"
    if kind == "error":
        return json.dumps({"error": draw(errors)})
    if kind == "junk":
        return "{not json"
    if kind == "list":
        return "[1]"
    obj = draw(chunk_objects)
    if draw(st.booleans()):
        return json.dumps(obj, ensure_ascii=draw(st.booleans()))
    return draw(reordered(obj))


@st.composite
def reordered(draw: st.DrawFn, value: Any) -> str:
    """``value`` as JSON as no provider writes it but any may: members in any order,
    keys repeated (the last one counts) or escaped, whitespace between tokens."""
    ws = st.sampled_from(["", "", " ", "\t "])  # no line ends: the event is one data line
    if isinstance(value, list):
        items = [draw(reordered(v)) for v in value]
        return "[" + ",".join(draw(ws) + i + draw(ws) for i in items) + "]"
    if not isinstance(value, dict):
        return json.dumps(value, ensure_ascii=draw(st.booleans()))
    members = []
    for key, v in draw(st.permutations(list(value.items()))):
        if draw(st.integers(0, 5)) == 0:  # an earlier value of the same key, overridden
            members.append((key, draw(st.sampled_from([None, "", "dup", 0]))))
        members.append((key, v))
    out = []
    for key, v in members:
        name = json.dumps(key)
        if key and draw(st.integers(0, 4)) == 0:
            name = '"' + "".join(f"\\u{ord(c):04x}" for c in key) + '"'
        out.append(f"{draw(ws)}{name}{draw(ws)}:{draw(ws)}{draw(reordered(v))}{draw(ws)}")
    return "{" + ",".join(out) + "}"


@st.composite
def wires(draw: st.DrawFn) -> list[bytes]:
    """SSE bodies with any line ending, comments and other fields, split anywhere."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    out = []
    for payload in draw(st.lists(payloads(), max_size=8)):
        if draw(st.booleans()):
            out.append(draw(st.sampled_from([": keep-alive", "event: chunk", "id: 7"])) + eol)
        out.append(f"data:{draw(st.sampled_from(['', ' ']))}{payload}{eol}{eol}")
    if draw(st.booleans()):
        out.append("data: [DONE]" + eol + eol)
    wire = "".join(out).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(wires(), st.booleans())
def test_relay_matches_the_python_stream_path(chunks: list[bytes], include_usage: bool) -> None:
    check(chunks, include_usage)


@given(chunk_objects.flatmap(lambda o: st.tuples(st.just(o), reordered(o))))
def test_reordered_events_load_as_the_same_object(case: tuple[Any, str]) -> None:
    obj, text = case
    assert json.loads(text) == obj


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'


@pytest.mark.parametrize(
    "wire",
    [
        _chunk({"role": "assistant", "content": ""})
        + _chunk({"content": "Hel"})
        + _chunk({"content": "lo."})
        + _chunk({}, "stop")
        + USAGE
        + b"data: [DONE]\n\n",
        _chunk({"content": "a"}, "length") + USAGE,  # no [DONE]: ended by the body's end
        _chunk({"content": "a"}) + USAGE,  # no finish reason: cut
        _chunk({"content": "a"}) + b"data: [DONE]\n\n",  # [DONE] without finish: cut
        _chunk({"content": "a"}) + b'data: {"error":{"message":"boom","code":"x"}}\n\n',
        _chunk({"refusal": "no"}, "content_filter") + b"data: [DONE]\n\n",
        'data: {"choices":[{"delta":{"content":"caf\xc3\xa9\xff"}}]}\n\n'.encode("latin-1")
        + _chunk({}, "stop")
        + b"data: [DONE]\n\n",
    ],
)
def test_relay_examples(wire: bytes) -> None:
    check([wire])
    check([wire[i : i + 7] for i in range(0, len(wire), 7)], include_usage=False)


@pytest.mark.parametrize(
    ("delta", "field"),
    [
        ({"content": 5}, "content"),
        ({"refusal": ["x"]}, "refusal"),
        ({"tool_calls": {"index": 0}}, "tool_calls"),
        ({"tool_calls": [{"index": "1"}]}, "index"),
        ({"tool_calls": [{"function": {"arguments": {"a": 1}}}]}, "arguments"),
        ({"tool_calls": [{"id": 3.5}]}, "id"),
    ],
)
def test_a_field_of_another_type_is_a_malformed_chunk(delta: dict[str, Any], field: str) -> None:
    relay = _core.OpenAIRelay("m")
    relay.feed(_chunk({"content": "a"}) + _chunk(delta))
    assert relay.failure == (_core.RELAY_FAIL_SHAPE, field)
    err = relay_error(relay.failure, "prov")
    assert err.error_class is ErrorClass.INVALID_OUTPUT and field in err.message
    relay.begin("id", "m", 0, False)
    assert relay.render().count(b"data: ") == 2  # the role chunk and "a", nothing more


# Streams of tool-call deltas only, indexes often left out or null and ids repeated, so
# that every placing rule (the wire's index, a known id, a new id, the last call) meets
# every other.
placed_calls = st.lists(
    st.lists(
        st.fixed_dictionaries(
            {"function": st.fixed_dictionaries({"arguments": st.sampled_from(["", "{", "}"])})},
            optional={
                "index": st.none() | st.integers(0, 2),
                # Numbers too: some compatible servers send them (their text is the id).
                "id": st.sampled_from([None, "", "c1", "c2", "c3", 7, 8, 2**64 - 1]),
            },
        ),
        min_size=1,
        max_size=3,
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(placed_calls)
def test_tool_calls_without_an_index_are_placed_as_the_python_path_places_them(
    events: list[list[dict[str, Any]]],
) -> None:
    wire = b"".join(_chunk({"tool_calls": calls}) for calls in events)
    check([wire + _chunk({}, "tool_calls") + USAGE])


def test_whole_calls_without_an_index_stay_apart() -> None:
    """Ollama's shape: two whole calls in one event, ids and no index."""
    calls = [
        {"id": "a", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "function": {"name": "g", "arguments": '{"x": 1}'}},
    ]
    relay = _core.OpenAIRelay("m")
    relay.begin("id", "m", 0, False)
    relay.feed(_chunk({"tool_calls": calls}) + _chunk({}, "tool_calls") + USAGE)
    frames = [json.loads(f[len(b"data: ") :]) for f in relay.render().split(b"\n\n") if f]
    placed = [
        (c["index"], c.get("id"), c["function"]["arguments"])
        for f in frames
        for c in f["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert placed == [(0, "a", "{}"), (1, "b", '{"x": 1}')]


def test_finish_reasons_agree_with_the_normaliser() -> None:
    for raw, canonical in FINISH_REASONS.items():
        assert _core.finish_reason(raw) == canonical
    assert _core.finish_reason("unheard_of") == "stop"


def test_render_needs_begin() -> None:
    with pytest.raises(ValueError, match="begin"):
        _core.OpenAIRelay("m").render()


def test_begin_without_a_time_is_now_and_render_ignores_its_item() -> None:
    # The server begins a relay with created=None and renders it as `render(item)`,
    # the item being the relay itself (any object is ignored).
    before = int(time.time())
    relay = _core.OpenAIRelay("m")
    relay.begin("id", "m", None, False)
    relay.feed(_chunk({"content": "a"}))
    created = json.loads(relay.render(relay).split(b"\n\n")[0][len(b"data: ") :])["created"]
    assert before <= created <= int(time.time())
    relay.feed(_chunk({"content": "b"}))
    assert b'"content":"b"' in relay.render(object())


_STREAM = (
    _chunk({"content": "Hi"}, "stop")
    + b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("relayed", [True, False])
async def test_a_body_that_ends_after_its_stream_keeps_the_connection(relayed: bool) -> None:
    # A provider that flushes [DONE] and then, in another write, the chunked body's end:
    # the stream is over before the body, and the connection must still be reused.
    peers: set[Any] = set()

    async def chat(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_STREAM)
        await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    runner, port = await serve(chat)
    adapter = OpenAIAdapter(
        "up", ProviderConfig(kind="openai", base_url=f"http://127.0.0.1:{port}/v1")
    )
    await adapter.open()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        for _ in range(3):
            if relayed:
                stream = RelayStream(adapter, url, b"{}", 5.0, _core.OpenAIRelay("m"))
                relay = await anext(stream)
                relay.begin("id", "m", 0, False)
                assert relay.render().endswith(b"data: [DONE]\n\n")
                stream.close()
            else:
                events = adapter._stream(url, {}, 5.0, OpenAIStreamParser("up", "m"))
                assert isinstance([e async for e in events][-1], StreamEnd)
            await asyncio.sleep(0.1)  # the body's end arrives; the connection is pooled
        assert len(peers) == 1
    finally:
        await adapter.close()
        await runner.cleanup()


async def test_a_providers_cookies_are_never_sent_back() -> None:
    # Providers set cookies (OpenAI's API answers with Cloudflare's); the sidecar calls
    # for every tenant over one session, so it keeps none: no state passes between
    # callers, and no provider sees what it set for another caller's call.
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("cookie"))
        await request.read()
        answer = web.Response(
            body=orjson.dumps(
                {
                    "id": "c",
                    "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
                }
            ),
            content_type="application/json",
        )
        answer.set_cookie("__cf_bm", "tenant-a-session")
        return answer

    runner, port = await serve(chat)
    # By name: aiohttp's default jar keeps no cookies of a host given as an IP address.
    adapter = OpenAIAdapter(
        "up", ProviderConfig(kind="openai", base_url=f"http://localhost:{port}/v1")
    )
    await adapter.open()
    try:
        for _ in range(2):
            await adapter._post_raw(f"http://localhost:{port}/v1/chat/completions", b"{}", 5.0)
        assert seen == [None, None]
    finally:
        await adapter.close()
        await runner.cleanup()


@pytest.mark.parametrize("path", ["complete", "stream", "relay"])
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_a_redirect_is_a_provider_failure_and_the_key_goes_nowhere(
    kind: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A provider (or whatever answers at its base URL) that redirects elsewhere: the
    # key it was given must not follow (aiohttp, following, would drop Authorization
    # across origins but keep x-api-key and x-goog-api-key), and the deployment failed.
    monkeypatch.setenv("TG_TEST_PROVIDER_KEY", "sk-for-the-provider-only-0123456789")
    elsewhere: list[dict[str, str]] = []

    async def collect(request: web.Request) -> web.Response:
        elsewhere.append(dict(request.headers))
        return web.Response(body=b"{}", content_type="application/json")

    other = await serve(collect, None)

    async def provider(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(f"http://localhost:{other[1]}/collect")

    sites = [other, await serve(provider, None)]
    base = f"http://127.0.0.1:{sites[1][1]}/v1"
    adapter = make_adapter(
        "up",
        ProviderConfig(kind=kind, base_url=base, api_key={"env": "TG_TEST_PROVIDER_KEY"}),
    )
    assert isinstance(adapter, HttpAdapter)
    await adapter.open()
    url = f"{base}/chat/completions"
    try:
        with pytest.raises(ProviderError) as err:
            if path == "complete":
                await adapter._post_raw(url, b"{}", 5.0)
            elif path == "stream":
                [e async for e in adapter._stream(url, b"{}", 5.0, OpenAIStreamParser("up", "m"))]
            else:
                await anext(RelayStream(adapter, url, b"{}", 5.0, _core.OpenAIRelay("m")))
        assert err.value.error_class is ErrorClass.SERVER_ERROR and err.value.retryable
        assert err.value.status == 307
        assert elsewhere == []
    finally:
        await adapter.close()
        for runner, _ in sites:
            await runner.cleanup()


_CAP = 4096  # the bound, lowered for the tests below


@pytest.mark.parametrize(
    ("shape", "size", "fails"),
    [
        ("length", _CAP, False),
        ("length", _CAP + 1, True),  # refused from its Content-Length, unread
        ("chunked", _CAP, False),
        ("chunked", 10 * _CAP, True),
        ("gzip", _CAP, False),
        ("gzip", 100 * _CAP, True),  # a few hundred bytes on the wire
    ],
)
async def test_an_answer_past_the_bound_is_malformed_not_kept(
    shape: str, size: int, fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gzip

    from tiergate.providers import _http

    monkeypatch.setattr(_http, "MAX_ANSWER_BYTES", _CAP)
    body = b"x" * size

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        if shape == "length":
            return web.Response(body=body)
        if shape == "gzip":
            packed = gzip.compress(body)
            return web.Response(body=packed, headers={"content-encoding": "gzip"})
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, size, 1000):
            await resp.write(body[i : i + 1000])
        await resp.write_eof()
        return resp

    runner, port = await serve(answer)
    adapter = OpenAIAdapter(
        "up", ProviderConfig(kind="openai", base_url=f"http://127.0.0.1:{port}/v1")
    )
    await adapter.open()
    try:
        call = adapter._post_raw(f"http://127.0.0.1:{port}/v1/chat/completions", b"{}", 5.0)
        if fails:
            with pytest.raises(ProviderError) as err:
                await call
            assert err.value.error_class is ErrorClass.INVALID_OUTPUT
            assert f"over {_CAP} bytes" in str(err.value) and err.value.provider == "up"
        else:
            assert await call == body
    finally:
        await adapter.close()
        await runner.cleanup()


def test_a_streamed_event_past_the_bound_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    from tiergate.providers import normalise

    monkeypatch.setattr(normalise, "MAX_ANSWER_BYTES", 64)
    fine = SSEParser()
    for _ in range(100):  # many events, each small: no bound on the stream's length
        assert fine.feed(b"data: " + b"y" * 40 + b"\n\n")[0].data == "y" * 40
    assert [e.data for e in fine.feed(b"data: a\r\ndata: b\r\n\r\n")] == ["a\nb"]
    for first, more in [(b"data: x", b"yyyyyyyy"), (b"data: x\n", b"data: y\n")]:
        parser = SSEParser()
        parser.feed(first)
        with pytest.raises(ProviderError) as err:
            for _ in range(100):
                parser.feed(more)
        assert err.value.error_class is ErrorClass.INVALID_OUTPUT


def test_the_relays_bound_is_a_malformed_stream() -> None:
    err = relay_error((_core.RELAY_FAIL_TOO_LARGE, ""), "up")
    assert err.error_class is ErrorClass.INVALID_OUTPUT and err.retryable
    assert f"over {_core.RELAY_MAX_EVENT_BYTES} bytes" in str(err)
    from tiergate.providers import normalise

    assert normalise.MAX_ANSWER_BYTES == _core.RELAY_MAX_EVENT_BYTES  # one bound
