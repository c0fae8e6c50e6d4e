"""An OpenAI-compatible server that reports no usage (one that ignores
``stream_options.include_usage``, or leaves ``usage`` out of its answers): the call is
billed as estimated, the prompt's tokens and the answer's, never as free; a server that
reports usage is billed exactly that."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from harness import logged_line, sidecar_before

CONFIG = """
providers:
  local: {kind: openai_compatible, base_url: "http://127.0.0.1:PORT/v1", api_key: {env: USAGE_KEY}}
tiers: [one]
deployments:
  d: {provider: local, model: m-local, tier: one, price: {input: 3, output: 15}}
routes:
  r: {deployment: d}
telemetry: {log: "LOG", safety_log: null}
"""

ANSWER = "The capital of Norway is Oslo, on the Oslofjord."
REPORTED = {"prompt_tokens": 21, "completion_tokens": 12}


class Upstream:
    def __init__(self) -> None:
        self.usage: dict[str, int] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            answer: dict[str, Any] = {
                "id": "u",
                "object": "chat.completion",
                "created": 1,
                "model": "m-local",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
            }
            if self.usage is not None:
                answer["usage"] = self.usage
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i, piece in enumerate(ANSWER.split(" ")):
            delta = {"content": piece if i == 0 else " " + piece}
            await resp.write(_event([{"index": 0, "delta": delta, "finish_reason": None}]))
        await resp.write(_event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if self.usage is not None:
            await resp.write(_event([], usage=self.usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    body = {"id": "u", "object": "chat.completion.chunk", "model": "m-local", "choices": choices}
    return b"data: " + json.dumps({**body, **extra}).encode() + b"\n\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Upstream, Path]]:
    os.environ.setdefault("USAGE_KEY", "k")
    up = Upstream()
    folder = tmp_path_factory.mktemp("usage")
    log = folder / "requests.jsonl"
    with sidecar_before(up.handle, CONFIG.replace("LOG", str(log)), folder) as url:
        yield url, up, log


QUESTION = "What is the capital of Norway? Answer in one sentence, and name the fjord."


def _ask(url: str, stream: bool) -> tuple[str, str]:
    """The answer's text and its request id, asked with the OpenAI SDK (a question of
    its own each time: a repeated one would be replayed, and not billed again)."""
    question = f"{QUESTION} ({uuid.uuid4().hex[:6]})"
    with openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="r", messages=[{"role": "user", "content": question}], stream=stream
        )
        rid = raw.headers["x-request-id"]
        parsed: Any = raw.parse()
        if not stream:
            return parsed.choices[0].message.content, rid
        return "".join(c.choices[0].delta.content or "" for c in parsed if c.choices), rid


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_call_without_usage_is_billed_as_estimated(
    served: tuple[str, Upstream, Path], stream: bool
) -> None:
    url, up, log = served
    up.usage = None
    text, rid = _ask(url, stream)
    assert text == ANSWER
    line = logged_line(log, rid)
    tokens_in, tokens_out = line["tokens"]["input"], line["tokens"]["output"]
    # The prompt is ~20 tokens and the answer ~12; an estimate, not the exact count.
    assert 10 <= tokens_in <= 40 and 5 <= tokens_out <= 25, line["tokens"]
    assert line["cost_usd"] == pytest.approx((tokens_in * 3 + tokens_out * 15) / 1e6)
    assert line["attempts"][0]["cost_usd"] == line["cost_usd"] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_call_with_usage_is_billed_as_reported(
    served: tuple[str, Upstream, Path], stream: bool
) -> None:
    url, up, log = served
    up.usage = REPORTED
    _, rid = _ask(url, stream)
    line = logged_line(log, rid)
    assert (line["tokens"]["input"], line["tokens"]["output"]) == (21, 12)
    assert line["cost_usd"] == pytest.approx((21 * 3 + 12 * 15) / 1e6)
