"""Routing and resilience through real HTTP with the simulators and their fault endpoint.
Each test asserts on what the simulator counted, not only on what the caller saw."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from harness import Stack, fast_sim_config, left_mid_stream, wait_line
from tiergate.config import EjectionConfig


def ask(tag: str = "") -> list[dict[str, str]]:
    """A unique prompt, so no test replays another's answer."""
    return [{"role": "user", "content": f"Explain routing briefly. {tag} {uuid.uuid4().hex}"}]


def body(route: str = "fast", **extra: Any) -> dict[str, Any]:
    return {"model": route, "messages": ask(), "max_tokens": 40, **extra}


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    routing = getattr(request, "param", {})
    s = Stack(fast_sim_config(**routing))
    yield s
    s.close()


def small_tier(stack: Stack) -> list[str]:
    """The small tier in the order the planner prefers it (cheapest first)."""
    explained = orjson.loads(stack.post("/v1/route/explain", body()).data)
    return [d for d in explained["plan"] if stack.config.deployments[d].tier == "small"]


def test_explain_lists_every_candidate_with_verdicts(stack: Stack) -> None:
    resp = stack.post(
        "/v1/route/explain",
        body("auto", tools=[{"type": "function", "function": {"name": "f"}}]),
        {"x-tiergate-max-cost-usd": "0.0005"},
    )
    assert resp.status == 200
    data = orjson.loads(resp.data)
    assert len(data["candidates"]) == len(stack.config.deployments)
    by_name = {c["deployment"]: c for c in data["candidates"]}
    assert all(
        {"failed", "predicted_latency_ms", "expected_cost_usd", "predicted_quality"} <= set(c)
        for c in data["candidates"]
    )
    # llama-70b and llama-8b declare tools; every deployment has a cost; the cheapest feasible leads.
    feasible = [c for c in data["candidates"] if c["feasible"]]
    assert data["plan"][0] == min(feasible, key=lambda c: c["expected_cost_usd"])["deployment"]
    assert all(c["expected_cost_usd"] <= 0.0005 for c in feasible)
    assert "cost" in by_name["claude-sonnet"]["failed"]
    assert data["request"]["required"] == ["tools"]


def test_outage_is_invisible_while_a_sibling_exists(stack: Stack) -> None:
    primary, *siblings = small_tier(stack)
    stack.fault(primary, "error", status=503)
    statuses, served = [], []
    for _ in range(30):
        resp = stack.post("/v1/chat/completions", body())
        statuses.append(resp.status)
        served.append(resp.headers.get("x-tiergate-deployment"))
    assert statuses == [200] * 30
    assert primary not in served and set(served) <= set(siblings)
    # Cooled down (Retry-After on the 503) or ejected after its consecutive failures:
    # the simulator saw at most those.
    assert 1 <= stack.calls(primary) <= EjectionConfig().consecutive_failures


def test_retry_after_is_honoured(stack: Stack) -> None:
    primary = "gpt-4o-mini"  # pinned: every request asks for it first
    stack.fault(primary, "ratelimit", retry_after_s=1.5, duration_s=0.5)
    hit_at = time.monotonic()  # the 429 comes later: the cool-down ends after hit_at + 1.5
    first = stack.post("/v1/chat/completions", body(primary))
    assert first.status == 200 and first.headers["x-tiergate-deployment"] != primary
    assert first.headers["x-tiergate-attempts"] == "2"
    assert stack.calls(primary) == 1
    # Nothing reaches it before Retry-After passes; the last request starts 0.4 s early so
    # that a slow moment on a busy machine cannot carry its planning past the cool-down.
    while time.monotonic() - hit_at < 1.1:
        resp = stack.post("/v1/chat/completions", body(primary))
        assert resp.status == 200 and resp.headers["x-tiergate-deployment"] != primary
    assert stack.calls(primary) == 1
    time.sleep(max(0.0, 1.6 - (time.monotonic() - hit_at)))
    again = stack.post("/v1/chat/completions", body(primary))
    assert again.headers["x-tiergate-deployment"] == primary and stack.calls(primary) == 2


@pytest.mark.parametrize("stack", [{"min_samples": 4}], indirect=True)
def test_brownout_moves_the_plan_and_keeps_p95_in_budget(stack: Stack) -> None:
    budget_ms = 400
    primary = small_tier(stack)[0]
    # Every model answers in ~10-30 ms; the primary's brownout makes 40% of calls 60×
    # slower (~0.6 s, over the budget).
    stack.fault(primary, "latency", factor=60, rate=0.4)
    latencies, served = [], []
    for _ in range(80):
        started = time.perf_counter()
        resp = stack.post(
            "/v1/chat/completions", body(), {"x-tiergate-latency-budget-ms": str(budget_ms)}
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert resp.status == 200
        served.append(resp.headers["x-tiergate-deployment"])
    assert served[-20:].count(primary) == 0  # the plan moved away within the window
    # p95 within budget: at most 5% of the requests were over it. Only the primary's
    # answers were slowed; counting only those keeps a busy test host's own delays (on
    # answers the brownout never touched) out of the verdict.
    over = [ms for ms, d in zip(latencies, served, strict=True) if d == primary and ms > budget_ms]
    assert len(over) <= len(latencies) // 20, (over, served)
    assert stack.calls(primary) < 20


def test_identical_concurrent_requests_share_one_upstream_call(stack: Stack) -> None:
    stack.fault("gpt-4o-mini", "latency", factor=30)  # slow enough that all 8 overlap
    same = body("gpt-4o-mini")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: stack.post("/v1/chat/completions", same), range(8)))
    assert [a.status for a in answers] == [200] * 8
    assert len({a.data for a in answers}) == 1
    assert sorted(a.headers.get("x-tiergate-idempotency", "miss") for a in answers) == [
        "coalesced"
    ] * 7 + ["miss"]
    assert stack.calls("gpt-4o-mini") == 1
    replay = stack.post("/v1/chat/completions", same)
    assert replay.headers["x-tiergate-replay"] == "true" and replay.data == answers[0].data
    assert stack.calls("gpt-4o-mini") == 1
    # A caller's Idempotency-Key replays too, even with a different body.
    keyed = stack.post("/v1/chat/completions", body("gpt-4o-mini"), {"Idempotency-Key": "order-17"})
    other = stack.post("/v1/chat/completions", body("gpt-4o-mini"), {"Idempotency-Key": "order-17"})
    assert other.headers["x-tiergate-replay"] == "true" and other.data == keyed.data
    assert stack.calls("gpt-4o-mini") == 2


def test_streamed_replay_is_identical(stack: Stack) -> None:
    req = body("claude-haiku", stream=True, stream_options={"include_usage": True})
    first = stack.post("/v1/chat/completions", req)
    second = stack.post("/v1/chat/completions", req)
    assert first.status == second.status == 200
    assert second.headers["x-tiergate-replay"] == "true"
    assert second.data == first.data and first.data.endswith(b"data: [DONE]\n\n")
    assert stack.calls("claude-haiku") == 1


def test_failures_are_not_replayed(stack: Stack) -> None:
    for dep in stack.config.deployments:
        stack.fault(dep, "error", status=500)
    req = body("gpt-4o")
    assert stack.post("/v1/chat/completions", req).status == 502
    stack.clear_faults()
    assert stack.post("/v1/chat/completions", req).status == 200


@pytest.mark.parametrize(
    "stack", [{"ejection": EjectionConfig(consecutive_failures=100)}], indirect=True
)
def test_one_deadline_across_slow_failing_attempts(stack: Stack) -> None:
    for dep in stack.config.deployments:
        stack.fault(dep, "stall")
    started = time.perf_counter()
    resp = stack.post("/v1/chat/completions", body("fast"), {"x-tiergate-timeout-ms": "600"})
    elapsed = (time.perf_counter() - started) * 1000
    assert resp.status == 504
    err = orjson.loads(resp.data)["error"]
    assert err["code"] == "deadline_exceeded" and err["type"] == "timeout_error"
    assert elapsed < 600 + 250, elapsed
    # Anthropic callers get their own shape.
    resp = stack.post(
        "/v1/messages",
        {"model": "fast", "max_tokens": 5, "messages": ask()},
        {"x-tiergate-timeout-ms": "300"},
    )
    assert resp.status == 504 and orjson.loads(resp.data)["error"]["type"] == "timeout_error"


def test_stream_fails_over_before_the_first_byte(stack: Stack) -> None:
    stack.fault("gpt-4o-mini", "error", status=503)
    resp = stack.post("/v1/chat/completions", body("gpt-4o-mini", stream=True))
    assert resp.status == 200
    assert resp.headers["x-tiergate-deployment"] != "gpt-4o-mini"
    assert resp.headers["x-tiergate-attempts"] == "2"
    assert resp.data.endswith(b"data: [DONE]\n\n")


def test_a_cut_stream_ends_with_a_terminal_error(stack: Stack) -> None:
    stack.fault("claude-haiku", "cut")
    resp = stack.post("/v1/chat/completions", body("claude-haiku", stream=True, max_tokens=200))
    frames = [f for f in resp.data.decode().split("\n\n") if f]
    assert b"[DONE]" not in resp.data
    assert orjson.loads(frames[-1].removeprefix("data: "))["error"]["code"] == "stream_interrupted"
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="claude-haiku", messages=ask(), stream=True, max_tokens=200
        )  # type: ignore[arg-type]
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
    anth = stack.post(
        "/v1/messages",
        {"model": "claude-haiku", "max_tokens": 200, "stream": True, "messages": ask()},
    )
    assert b"event: message_stop" not in anth.data and b"event: error" in anth.data


@pytest.mark.parametrize("stack", [{"inter_chunk_timeout_s": 0.5}], indirect=True)
def test_a_stalled_stream_ends_with_a_terminal_error(stack: Stack) -> None:
    stack.fault("gemini-flash", "stall")
    started = time.perf_counter()
    resp = stack.post("/v1/chat/completions", body("gemini-flash", stream=True, max_tokens=200))
    assert time.perf_counter() - started < 5
    assert b"[DONE]" not in resp.data and b'"stream_stalled"' in resp.data


class SlowQuality:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict(self, request: Any, prompt_tokens: int) -> list[float]:
        time.sleep(0.08)  # a scorer gone slow: 80 ms against a 20 ms budget
        return list(self.inner.predict(request, prompt_tokens))

    def floor(self, *args: Any) -> float:
        return float(self.inner.floor(*args))


@pytest.mark.parametrize("stack", [{"decision_budget_ms": 20}], indirect=True)
def test_a_slow_decision_falls_back_to_the_route_default(stack: Stack) -> None:
    planner = stack.server.runtime.current.planner
    planner.quality = SlowQuality(planner.quality)
    default = stack.config.routes["auto"].default
    resp = stack.post("/v1/chat/completions", body("auto"))
    assert resp.status == 200 and resp.headers["x-tiergate-deployment"] == default
    assert float(resp.headers["x-tiergate-decision-us"]) > 20_000


def test_reload_under_load_fails_no_request(stack: Stack) -> None:
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        while not stop.is_set():
            statuses.append(stack.post("/v1/chat/completions", body("auto")).status)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    runtime = stack.server.runtime
    windows_before = runtime.current.planner.router
    for i in range(6):
        time.sleep(0.1)
        routes = dict(stack.config.routes)
        routes["auto"] = routes["auto"].model_copy(update={"latency_budget_ms": 5000 + i})
        assert stack.run(runtime.reload(stack.config.model_copy(update={"routes": routes}))) == []
    stop.set()
    for t in threads:
        t.join(10)
    assert len(statuses) > 20 and set(statuses) == {200}
    assert runtime.reloads == 6 and runtime.current.planner.router is not windows_before


def test_a_broken_reload_keeps_the_running_config(stack: Stack, tmp_path: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\ndeployments: {}\ntiers: []\n")
    runtime = stack.server.runtime
    runtime._path = bad  # what a SIGHUP would read
    problems = stack.run(runtime.reload())
    assert problems and any("deployments" in p for p in problems)
    assert stack.post("/v1/chat/completions", body()).status == 200


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    """A stack whose request log is a file the test reads."""
    config = fast_sim_config()
    log = tmp_path / "requests.jsonl"
    telemetry = config.telemetry.model_copy(update={"log": str(log), "safety_log": None})
    stack = Stack(config.model_copy(update={"telemetry": telemetry}))
    yield stack, log
    stack.close()


def test_a_caller_leaving_mid_stream_is_not_the_providers_fault(
    logged: tuple[Stack, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # The canonical (not relayed) stream path: the caller hangs up after the first text
    # piece; the sidecar stops the provider's stream, records 499, and logs no error.
    stack, log = logged
    stack.fault("claude-haiku", "latency", factor=400)  # a slow stream: the caller leaves first
    req = body("claude-haiku", stream=True, max_tokens=300)
    left_mid_stream(stack, log, "claude-haiku", req, 2)  # the role chunk, one piece
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The same request afterwards is a fresh call, not a replay of a half answer.
    stack.clear_faults()
    again = stack.post("/v1/chat/completions", req)
    assert again.status == 200 and "x-tiergate-replay" not in again.headers
    assert again.data.endswith(b"data: [DONE]\n\n")


def test_a_caller_leaving_before_its_answer_gets_it_replayed_not_billed_again(
    logged: tuple[Stack, Path], caplog: pytest.LogCaptureFixture
) -> None:
    stack, log = logged
    stack.fault("claude-haiku", "latency", factor=100)  # the caller is gone before the answer
    req = body("claude-haiku", max_tokens=50)
    payload = orjson.dumps(req)
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stack.calls("claude-haiku") < 1:
        time.sleep(0.02)
    line = wait_line(log, lambda line: line.get("status") == 499)
    assert line["deployment"] == "claude-haiku" and line["cost_usd"] > 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Its retry is answered from the replay store: the provider is not called (or
    # billed) again.
    stack.clear_faults()
    again = stack.post("/v1/chat/completions", req)
    assert again.status == 200 and again.headers["x-tiergate-replay"] == "true"
    assert stack.calls("claude-haiku") == 1
