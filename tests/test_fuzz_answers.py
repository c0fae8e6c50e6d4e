"""What a provider answers, mutated: the sidecar serves it (200, well formed) or fails
the attempt as the provider's (502 upstream_error in the caller's shape), never a 500.
The answers of the three HTTP protocols (OpenAI, Anthropic, Gemini), non-streamed and
streamed, drawn as near-valid documents with values replaced, removed or added."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import mutated
from harness import assert_honest, sidecar_before

CONFIG = """
providers:
  o: {kind: openai, base_url: "http://127.0.0.1:PORT/v1", api_key: {env: FUZZ_KEY}}
  a: {kind: anthropic, base_url: "http://127.0.0.1:PORT", api_key: {env: FUZZ_KEY}}
  g: {kind: gemini, base_url: "http://127.0.0.1:PORT", api_key: {env: FUZZ_KEY}}
tiers: [one]
deployments:
  do: {provider: o, model: m-o, tier: one, price: {input: 1, output: 2}}
  da: {provider: a, model: m-a, tier: one, price: {input: 1, output: 2}}
  dg: {provider: g, model: m-g, tier: one, price: {input: 1, output: 2}}
routes:
  ro: {deployment: do}
  ra: {deployment: da}
  rg: {deployment: dg}
telemetry: {log: null}
"""

CALL = {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Oslo"}'}}
ANSWERS: dict[str, list[dict[str, Any]]] = {
    "ro": [
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m-o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi.", "tool_calls": [CALL]},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 2,
                "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 1},
            },
        }
    ],
    "ra": [
        {
            "id": "x",
            "type": "message",
            "role": "assistant",
            "model": "m-a",
            "content": [
                {"type": "text", "text": "Hi."},
                {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}},
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 1},
        }
    ],
    "rg": [
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "Hi."}, {"functionCall": {"name": "w", "args": {}}}],
                    },
                    "finishReason": "STOP",
                    "safetyRatings": [],
                }
            ],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
            "modelVersion": "m-g",
        }
    ],
}


class Upstream:
    def __init__(self) -> None:
        self.answer = b"{}"
        self.stream = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if not self.stream:
            return web.Response(body=self.answer, content_type="application/json")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(self.answer)
        await resp.write_eof()
        return resp


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Upstream]]:
    os.environ.setdefault("FUZZ_KEY", "k")
    up = Upstream()
    with sidecar_before(up.handle, CONFIG, tmp_path_factory.mktemp("fuzz")) as url:
        yield url, up


HTTP = urllib3.PoolManager()


def _ask(url: str, route: str, surface: str, stream: bool) -> Any:
    body: dict[str, Any] = {
        "model": route,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [
            {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
        ],
    }
    if surface == "anthropic":
        body["tools"] = [{"name": "w", "input_schema": {"type": "object"}}]
    if stream:
        body["stream"] = True
    path = "/v1/messages" if surface == "anthropic" else "/v1/chat/completions"
    return HTTP.request(
        "POST", url + path, body=orjson.dumps(body), headers={"content-type": "application/json"}
    )


def _check(resp: Any, surface: str) -> None:
    assert resp.status in (200, 502, 504), (resp.status, resp.data[:400])  # served or failed over
    assert_honest(resp, surface)


S = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@S
@given(
    route=st.sampled_from(["ro", "ra", "rg"]),
    surface=st.sampled_from(["openai", "anthropic"]),
    data=st.data(),
)
def test_any_non_streamed_answer(
    served: Any, route: str, surface: str, data: st.DataObject
) -> None:
    url, up = served
    up.stream = False
    up.answer = json.dumps(data.draw(mutated(ANSWERS[route]))).encode()
    _check(_ask(url, route, surface, False), surface)


def _sse(route: str, events: list[Any]) -> bytes:
    if route == "ra":  # Anthropic names each event
        named = [(e.get("type") if isinstance(e, dict) else None, e) for e in events]
        return b"".join(
            f"event: {kind if isinstance(kind, str) else 'x'}\ndata: {json.dumps(e)}\n\n".encode()
            for kind, e in named
        )
    tail = b"data: [DONE]\n\n" if route == "ro" else b""
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + tail


STREAMS: dict[str, list[dict[str, Any]]] = {
    "ro": [
        {
            "events": [
                {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m-o",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                },
                {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m-o",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "content": "Hi",
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": "c1",
                                        "type": "function",
                                        "function": {"name": "w", "arguments": "{}"},
                                    }
                                ],
                            },
                            "finish_reason": None,
                        }
                    ],
                },
                {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m-o",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                },
                {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m-o",
                    "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                },
            ]
        }
    ],
    "ra": [
        {
            "events": [
                {
                    "type": "message_start",
                    "message": {
                        "id": "x",
                        "type": "message",
                        "role": "assistant",
                        "model": "m-a",
                        "content": [],
                        "usage": {"input_tokens": 5, "output_tokens": 0},
                    },
                },
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Hi"},
                },
                {"type": "content_block_stop", "index": 0},
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
                },
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "{}"},
                },
                {"type": "content_block_stop", "index": 1},
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 2},
                },
                {"type": "message_stop"},
            ]
        }
    ],
    "rg": [
        {
            "events": [
                {
                    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
                    "modelVersion": "m-g",
                },
                {
                    "candidates": [
                        {
                            "content": {
                                "role": "model",
                                "parts": [{"functionCall": {"name": "w", "args": {}}}],
                            },
                            "finishReason": "STOP",
                        }
                    ],
                    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
                },
            ]
        }
    ],
}


@S
@given(
    route=st.sampled_from(["ro", "ra", "rg"]),
    surface=st.sampled_from(["openai", "anthropic"]),
    data=st.data(),
)
def test_any_streamed_answer(served: Any, route: str, surface: str, data: st.DataObject) -> None:
    url, up = served
    up.stream = True
    doc = data.draw(mutated(STREAMS[route]))
    events = doc.get("events")
    up.answer = _sse(route, events if isinstance(events, list) else [])
    resp = _ask(url, route, surface, True)
    _check(resp, surface)


def test_answers_the_fuzz_found_are_malformed_not_crashes() -> None:
    from tiergate.errors import ErrorClass, ProviderError
    from tiergate.providers.gemini import parse_gemini_response

    odd = {**ANSWERS["rg"][0], "usageMetadata": 15041189}  # an int where an object goes
    with pytest.raises(ProviderError) as err:
        parse_gemini_response(odd, model="m-g", provider="g")
    assert err.value.error_class is ErrorClass.INVALID_OUTPUT and err.value.provider == "g"
