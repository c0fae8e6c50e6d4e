"""Shared builders for the telemetry, safety and drift tests."""

from __future__ import annotations

import time
from typing import Any

from tiergate.config import Config, parse_config
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

CANARY_PROVIDER_KEY = "sk-canaryPROVIDERkey0123456789abcdef"
CANARY_OTLP_TOKEN = "canary-otlp-token-9f8e7d6c5b4a"
CANARY_SIDECAR_KEY = "sk-ant-canarySIDECARkey0123456789"


def config(**sections: Any) -> Config:
    doc: dict[str, Any] = {
        "providers": {"oa": {"kind": "openai", "api_key": {"env": "TG_TEST_OPENAI_KEY"}}},
        "deployments": {
            "small": {
                "provider": "oa",
                "model": "gpt-4o-mini",
                "tier": "small",
                "price": {"input": 0.15, "output": 0.6},
            },
            "large": {
                "provider": "oa",
                "model": "gpt-4o",
                "tier": "large",
                "price": {"input": 2.5, "output": 10},
            },
        },
        "tiers": ["small", "large"],
        "routes": {"chat": {"strategy": "auto", "latency_budget_ms": 2000}},
        "tenants": {"acme": {"daily_spend_usd": 50}},
    }
    doc.update(sections)
    return parse_config(doc)


def record(
    request_id: str = "req-1",
    *,
    route: str = "chat",
    deployment: str | None = "small",
    status: int = 200,
    latency_ms: float = 420.0,
    fallback: bool = True,
    start_ns: int | None = None,
    **kw: Any,
) -> RequestRecord:
    start = start_ns if start_ns is not None else time.time_ns() - int(latency_ms * 1e6)
    attempts = []
    if fallback:
        attempts.append(
            AttemptRecord(
                "large",
                "openai",
                "gpt-4o",
                start + 1_000_000,
                100.0,
                status=503,
                error_class="server_error",
            )
        )
    if deployment is not None:
        attempts.append(
            AttemptRecord(
                deployment, "openai", "gpt-4o-mini", start + 102_000_000, latency_ms - 110, status=200,
                ttft_ms=80.0, input_tokens=120, output_tokens=30, cost_usd=0.0000360, finish_reason="stop",
            )
        )  # fmt: skip
    fields: dict[str, Any] = {
        "surface": "openai",
        "route": route,
        "tenant": "acme",
        "deployment": deployment,
        "provider": "openai" if deployment else None,
        "tier": "small" if deployment else None,
        "request_model": route,
        "response_model": "gpt-4o-mini-2024-07-18" if deployment else None,
        "attempts": attempts,
        "fallbacks": 1 if fallback else 0,
        "idempotency": "miss",
        "ttft_ms": 190.0,
        "latency_ms": latency_ms,
        "input_tokens": 120,
        "output_tokens": 30,
        "cached_tokens": 10,
        "reasoning_tokens": 0,
        "cost_usd": 0.000036,
        "predicted_quality": 0.81,
        "decision_us": 35.5,
        "decision_reason": "cheapest feasible",
        "relaxed": [],
        "safety": [SafetyFinding("email", "input", "redact", "messages[0].parts[0]")],
        "status": status,
        "finish_reason": "stop",
    }
    fields.update(kw)
    return RequestRecord(request_id=request_id, start_ns=start, **fields)
