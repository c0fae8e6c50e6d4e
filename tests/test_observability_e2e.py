"""Telemetry and safety wired into the sidecar, seen from outside over real HTTP:
the request log, the separate safety stream, /metrics, feedback, per-tenant
log/redact/block, and canary secrets that must never appear anywhere."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Stack, fast_sim_config
from tiergate.config import SafetyPolicyConfig, TenantConfig

CANARY_KEY = "sk-proj-CANARYcanaryCANARYcanary0123456789abcd"
CANARY_EMAIL = "canary.person@example.org"


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stack, Path, Path]]:
    monkeypatch.setenv("SIM_OPENAI_API_KEY", "sk-sim-CANARY-provider-key-000111")
    config = fast_sim_config()
    log, safety_log = tmp_path / "requests.jsonl", tmp_path / "safety.jsonl"
    telemetry = config.telemetry.model_copy(update={"log": str(log), "safety_log": str(safety_log)})
    tenants = {
        "strict": TenantConfig(
            safety=SafetyPolicyConfig(default="log", kinds={"api_key": "block"})
        ),
        "tidy": TenantConfig(safety=SafetyPolicyConfig(default="redact")),
    }
    s = Stack(config.model_copy(update={"telemetry": telemetry, "tenants": tenants}))
    yield s, log, safety_log
    s.close()


def lines(path: Path, n: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Wait for at least ``n`` JSON lines (exporters run off the request path)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            found = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
            if len(found) >= n:
                return found
        time.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {n} lines")


def chat(stack: Stack, content: str, tenant: str | None = None, route: str = "gpt-4o-mini") -> Any:
    headers = {"x-tiergate-tenant": tenant} if tenant else {}
    body = {"model": route, "messages": [{"role": "user", "content": content}], "max_tokens": 30}
    return stack.post("/v1/chat/completions", body, headers)


def test_one_log_line_per_request_with_the_decision(stack: tuple[Stack, Path, Path]) -> None:
    s, log, _ = stack
    resp = chat(s, f"hello {uuid.uuid4().hex}", route="fast")
    assert resp.status == 200
    rid = resp.headers["x-request-id"]
    line = next(x for x in lines(log, 1) if x["request_id"] == rid)
    assert line["event"] == "request" and line["status"] == 200
    assert line["deployment"] == resp.headers["x-tiergate-deployment"]
    assert line["route"] == "fast" and line["tier"] == "small" and line["provider"]
    assert len(line["attempts"]) == 1 and line["attempts"][0]["error_class"] is None
    assert line["tokens"]["input"] > 0 and line["tokens"]["output"] > 0
    assert line["cost_usd"] > 0 and line["decision_us"] > 0 and line["idempotency"] == "miss"
    assert line["predicted_quality"] is not None


def test_fallbacks_and_errors_are_logged(stack: tuple[Stack, Path, Path]) -> None:
    s, log, _ = stack
    s.fault("gpt-4o-mini", "error", status=500)
    resp = chat(s, f"fallback {uuid.uuid4().hex}")
    assert resp.status == 200
    line = next(x for x in lines(log, 1) if x["request_id"] == resp.headers["x-request-id"])
    assert line["fallbacks"] == 1
    assert [a["error_class"] for a in line["attempts"]] == ["server_error", None]
    bad = s.post(
        "/v1/chat/completions", {"model": "ghost", "messages": [{"role": "user", "content": "x"}]}
    )
    assert bad.status == 404
    assert any(
        x["status"] == 404 and x["error_type"] == "invalid_request_error" for x in lines(log, 2)
    )


def test_block_redact_and_log_per_tenant(stack: tuple[Stack, Path, Path]) -> None:
    s, log, safety_log = stack
    before = s.calls("gpt-4o-mini")
    blocked = chat(s, f"my key is {CANARY_KEY} please store it", tenant="strict")
    assert blocked.status == 400
    err = orjson.loads(blocked.data)["error"]
    assert err["code"] == "content_blocked" and "api_key" in err["message"]
    assert CANARY_KEY not in blocked.data.decode()
    assert s.calls("gpt-4o-mini") == before  # never reached a provider
    # Redacted before the provider sees it: the simulator echoes the prompt's opening words.
    tidy = chat(s, f"{CANARY_EMAIL} wrote to me; summarise {uuid.uuid4().hex}", tenant="tidy")
    assert tidy.status == 200
    assert CANARY_EMAIL not in tidy.data.decode()
    logged = chat(s, f"{CANARY_EMAIL} again {uuid.uuid4().hex}")  # default tenant: log only
    assert logged.status == 200
    events = lines(safety_log, 3)
    kinds = {(e["tenant"], e["kind"], e["action"]) for e in events}
    assert ("strict", "api_key", "block") in kinds and ("tidy", "email", "redact") in kinds
    assert ("default", "email", "log") in kinds
    # A log-only policy scans after the answer; the request's line still carries it.
    rid = logged.headers["x-request-id"]
    assert next(x for x in lines(log, 3) if x["request_id"] == rid)["safety"] == ["email:log"]
    # Findings are their own stream: the request log has no finding events.
    assert all(x["event"] == "request" for x in lines(log, 3))


def test_no_secret_anywhere(stack: tuple[Stack, Path, Path]) -> None:
    s, log, safety_log = stack
    chat(s, f"token {CANARY_KEY} and {CANARY_EMAIL}", tenant="strict")
    chat(s, f"token {CANARY_KEY} and {CANARY_EMAIL} {uuid.uuid4().hex}")
    s.fault("gpt-4o-mini", "error", status=401)
    chat(s, f"auth failure {uuid.uuid4().hex}")
    s.clear_faults()
    # A caller's own credentials never reach the logs or metrics.
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    headered = s.post("/v1/chat/completions", body, {"authorization": f"Bearer {CANARY_KEY}"})
    assert headered.status == 200
    lines(log, 4)
    metrics = s.http.request("GET", s.server.admin_url + "/metrics").data.decode()
    for text in (log.read_text(), safety_log.read_text(), metrics):
        assert CANARY_KEY not in text
        assert "sk-sim-CANARY-provider-key-000111" not in text
        assert "sim-anthropic-key" not in text


def test_metrics_and_feedback(stack: tuple[Stack, Path, Path]) -> None:
    s, _, _ = stack
    ok = chat(s, f"metrics {uuid.uuid4().hex}", route="auto")
    assert ok.status == 200
    deadline = time.monotonic() + 5
    total = 0.0
    while time.monotonic() < deadline and total < 1:
        text = s.http.request("GET", s.server.admin_url + "/metrics").data.decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        total = sum(
            x.value for x in families["tiergate_requests"].samples if x.name.endswith("_total")
        )
        time.sleep(0.05)
    assert total >= 1
    assert "gen_ai_client_operation_duration_seconds" in families
    fb = s.post("/v1/feedback", {"request_id": ok.headers["x-request-id"], "score": 1})
    assert fb.status == 200
    missing = s.post("/v1/feedback", {"request_id": "nope", "score": 1})
    assert missing.status == 404
    bad = s.post("/v1/feedback", {"request_id": ok.headers["x-request-id"], "score": 7})
    assert bad.status == 400 and orjson.loads(bad.data)["error"]["param"] == "score"
