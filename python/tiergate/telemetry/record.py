"""What the request path hands to telemetry: one record per request, built once at the end.

The server fills a :class:`RequestRecord` as the request moves through the phases and
passes it to ``Telemetry.record`` after the response is sent; every exporter (log line,
OpenTelemetry spans and metrics, Prometheus, CloudWatch, drift aggregates) reads only
this record, off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AttemptRecord", "RequestRecord", "SafetyFinding", "round_ms"]


def round_ms(ms: float) -> float:
    """``ms`` to the microsecond, as records hold times: ``round(ms, 3)`` by arithmetic
    (round's decimal conversion costs several times as much, on every request)."""
    return int(ms * 1000 + 0.5) / 1000


@dataclass(slots=True)
class AttemptRecord:
    deployment: str
    provider: str  # provider kind: openai, anthropic, gemini, bedrock, sagemaker, openai_compatible
    model: str  # provider model id
    start_ns: int  # time.time_ns() when the attempt started
    ms: float
    status: int | None = None  # provider HTTP status when known
    error_class: str | None = None  # None = success (ErrorClass value otherwise)
    hedge: bool = False  # started by hedging
    cancelled: bool = False  # lost a hedge race
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None


@dataclass(slots=True, frozen=True)
class SafetyFinding:
    kind: str  # email, phone, card, national_id, aws_key, api_key, private_key, injection, refusal, schema_invalid
    where: str  # "input" | "output"
    action: str  # log | redact | block
    location: str = ""  # e.g. "messages[1]"; never the matched text


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    start_ns: int  # time.time_ns() at arrival
    surface: str  # openai | anthropic
    route: str
    tenant: str = ""
    operation: str = "chat"
    stream: bool = False
    deployment: str | None = None  # the one that served (None when none did)
    provider: str | None = None
    tier: str | None = None
    request_model: str = ""  # what the caller named (the route)
    response_model: str | None = None  # what the provider says answered
    attempts: list[AttemptRecord] = field(default_factory=list)
    fallbacks: int = 0
    hedged: bool = False
    idempotency: str = "none"  # none | miss | coalesced | replay
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0  # every attempt's cost, hedges and cancelled ones included
    predicted_quality: float | None = None
    predicted_latency_ms: float | None = None
    decision_us: float = 0.0
    decision_reason: str = ""
    relaxed: list[str] = field(default_factory=list)
    safety: list[SafetyFinding] = field(default_factory=list)
    status: int = 200  # what the caller got
    error_type: str | None = None
    finish_reason: str | None = None
    stream_error: str | None = None  # a stream that failed after its first byte
    traceparent: str | None = None  # the caller's W3C trace context, continued
    prompt_text: str | None = None  # only when enabled, redacted
    completion_text: str | None = None  # only when enabled, redacted
