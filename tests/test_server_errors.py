"""Bad input over real HTTP: a 4xx in the caller's API shape naming the field, never a
500 or a hang, and nothing reaches a provider."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from harness import Stack, fast_sim_config
from tiergate.config import Credential, TenantConfig

GOOD = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = fast_sim_config()
    server = config.server.model_copy(
        update={"max_body_bytes": 64 * 1024, "client_timeout_s": 1.0, "keepalive_timeout_s": 1.5}
    )
    s = Stack(config.model_copy(update={"server": server}))
    yield s
    s.close()


def openai_error(resp: Any, status: int, param: str | None) -> dict[str, Any]:
    assert resp.status == status, resp.data
    body = orjson.loads(resp.data)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["message"]
    return dict(err)


CASES_OPENAI = [
    (b"{not json", 400, None, "not valid JSON"),
    (b"\xff\xfe{}", 400, None, "UTF-8"),
    (b"", 400, None, "empty"),
    (b"[1,2]", 400, None, "JSON object"),
    (orjson.dumps({"messages": GOOD["messages"]}), 400, "model", "model"),
    (orjson.dumps({"model": "auto"}), 400, "messages", "messages"),
    (
        orjson.dumps({**GOOD, "messages": [{"role": "user", "content": ""}]}),
        400,
        "messages[0].content",
        "empty",
    ),
    (orjson.dumps({**GOOD, "temperature": "warm"}), 400, "temperature", "number"),
    (orjson.dumps({**GOOD, "max_tokens": -1}), 400, "max_tokens", "at least"),
    (
        orjson.dumps(
            {**GOOD, "messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}
        ),
        400,
        "messages[0].content[0].type",
        "file",
    ),
    (orjson.dumps({**GOOD, "model": "no-such-route"}), 404, "model", "no-such-route"),
]


@pytest.mark.parametrize(("body", "status", "param", "words"), CASES_OPENAI)
def test_openai_surface_errors(
    stack: Stack, body: bytes, status: int, param: str | None, words: str
) -> None:
    before = stack.stats()
    err = openai_error(stack.post("/v1/chat/completions", body), status, param)
    assert words in err["message"]
    assert stack.stats() == before  # nothing reached a provider


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {
                "model": "auto",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "messages.0.content.0.type",
        ),
        (
            {"model": "auto", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
    ],
)
def test_anthropic_surface_errors(stack: Stack, body: dict[str, Any], param: str) -> None:
    resp = stack.post("/v1/messages", body)
    assert resp.status == 400
    payload = orjson.loads(resp.data)
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert param in payload["error"]["message"]


def test_sdks_raise_their_own_typed_errors(stack: Stack) -> None:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": ""}])
        assert info.value.body["param"] == "messages[0].content"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="ghost", messages=[{"role": "user", "content": "x"}]
            )
    with (
        anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError),
    ):
        client.messages.create(
            model="auto", max_tokens=5, messages=[{"role": "user", "content": []}]
        )


def test_headers_are_validated(stack: Stack) -> None:
    err = openai_error(
        stack.post("/v1/chat/completions", GOOD, {"x-tiergate-min-quality": "2"}),
        400,
        "x-tiergate-min-quality",
    )
    assert "between" in err["message"]
    openai_error(
        stack.post("/v1/chat/completions", GOOD, {"x-tiergate-latency-budget-ms": "soon"}),
        400,
        "x-tiergate-latency-budget-ms",
    )


def test_body_over_the_limit_is_413_in_caller_shape(stack: Stack) -> None:
    big = orjson.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 70_000}]})
    openai_error(stack.post("/v1/chat/completions", big), 413, None)
    resp = stack.post("/v1/messages", big)
    assert resp.status == 413 and orjson.loads(resp.data)["error"]["type"] == "request_too_large"
    # Feedback bodies are read by the same reader, under the same limit.
    feedback = orjson.dumps({"request_id": "x" * 70_000, "score": 1})
    openai_error(stack.post("/v1/feedback", feedback), 413, None)


def _raw_exchange(url: str, payload: bytes, pause_s: float = 0.0, tail: bytes = b"") -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        if pause_s:
            time.sleep(pause_s)
            try:
                sock.sendall(tail)
            except OSError:
                pass
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_chunked_body_over_the_limit_is_cut_off(stack: Stack) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    piece = b"x" * 40_000
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = _raw_exchange(stack.url, head + chunk + chunk + chunk + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"request_too_large"' in answer


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/feedback"])
def test_a_stalled_client_is_timed_out(stack: Stack, path: str) -> None:
    body = orjson.dumps(GOOD)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    started = time.monotonic()
    answer = _raw_exchange(stack.url, head + body[:10], pause_s=2.0, tail=body[10:])
    assert time.monotonic() - started < 8
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in answer


def test_unknown_path_and_method_in_caller_shape(stack: Stack) -> None:
    resp = stack.http.request("GET", stack.url + "/v1/chat/completions")
    assert resp.status == 405 and "error" in orjson.loads(resp.data)
    assert resp.headers["Allow"] == "POST"
    resp = stack.http.request("GET", stack.url + "/v1/messages")
    assert resp.status == 405 and orjson.loads(resp.data)["type"] == "error"  # Anthropic's
    resp = stack.http.request("POST", stack.url + "/v1/nothing", body=b"{}")
    assert resp.status == 404 and "error" in orjson.loads(resp.data)


def test_a_client_stalled_in_its_headers_is_disconnected(stack: Stack) -> None:
    started = time.monotonic()
    answer = _raw_exchange(stack.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    assert answer == b"" and time.monotonic() - started < 8


def test_a_keyed_sidecar_authenticates_first_and_keys_answers_by_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller is authenticated before its body is parsed (a refused caller gets 401
    whatever its body), an authenticated caller's bad body gets its 400, and an answer
    replays only to its own tenant."""
    monkeypatch.setenv("TG_TEST_ACME_KEY", "acme-secret")
    monkeypatch.setenv("TG_TEST_BETA_KEY", "beta-secret")
    config = fast_sim_config()
    tenants = {
        name: TenantConfig(api_keys=[Credential(env=f"TG_TEST_{name.upper()}_KEY")])
        for name in ("acme", "beta")
    }
    s = Stack(config.model_copy(update={"tenants": tenants}))
    path = "/v1/chat/completions"
    acme = {"authorization": "Bearer acme-secret"}
    try:
        openai_error(s.post(path, b"{not json"), 401, None)
        openai_error(s.post(path, b"{not json", acme), 400, None)
        bad_tokens = orjson.dumps({**GOOD, "max_tokens": -1})
        openai_error(s.post(path, bad_tokens, acme), 400, "max_tokens")
        bad_header = {"x-tiergate-max-cost-usd": "lots", **acme}
        openai_error(s.post(path, GOOD, bad_header), 400, "x-tiergate-max-cost-usd")
        assert s.post(path, GOOD).status == 401
        assert s.post(path, GOOD, {"authorization": "Bearer wrong"}).status == 401
        mismatch = {"authorization": "Bearer acme-secret", "x-tiergate-tenant": "beta"}
        assert s.post(path, GOOD, mismatch).status == 403
        body = {**GOOD, "messages": [{"role": "user", "content": "keyed by tenant, once"}]}
        beta = {"x-api-key": "beta-secret"}
        outcomes = [
            s.post(path, body, who).headers.get("x-tiergate-idempotency")
            for who in (acme, acme, beta, {**acme, "idempotency-key": "k1"})
        ]
        assert outcomes == [None, "replay", None, None]
    finally:
        s.close()


async def test_an_unexpected_failure_is_a_500_in_the_callers_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug inside a handler still answers in the caller's shape (and is logged)."""
    import os

    from aiohttp.test_utils import RawTestServer, TestClient

    from tiergate.config import load_config
    from tiergate.server import app as app_module
    from tiergate.server.state import Gateway, Runtime
    from tiergate.telemetry import Telemetry

    monkeypatch.setenv("UPSTREAM_URL", "http://127.0.0.1:9/v1")
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "examples", "overhead.yaml"))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    async def broken_later(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    runtime = Runtime(Gateway(config))
    handler = app_module.make_handler(runtime, Telemetry.from_config(config))
    async with TestClient(RawTestServer(handler)) as client:
        # Inside the pipeline (its coroutine answers), before it (the set-up of a
        # request), and inside another route's handler.
        for where, bug in [("_run", broken_later), ("__init__", broken)]:
            with monkeypatch.context() as m:
                m.setattr(app_module.Pipeline, where, bug)
                resp = await client.post("/v1/chat/completions", data=b"{}")
                assert resp.status == 500, where
                assert (await resp.json())["error"]["code"] == "internal_error"
                resp = await client.post("/v1/messages", data=b"{}")
                assert resp.status == 500, where
                assert (await resp.json())["error"]["type"] == "api_error"  # Anthropic's name
        with monkeypatch.context() as m:
            m.setattr(Runtime, "current", property(broken))
            resp = await client.get("/v1/models")
            assert resp.status == 500
            assert (await resp.json())["error"]["code"] == "internal_error"
