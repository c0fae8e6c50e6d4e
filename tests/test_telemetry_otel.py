"""Spans and metrics: in-memory exporters, then a real OTLP/HTTP receiver on loopback; no secret leaks."""

from __future__ import annotations

import io
import socket

import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from telemetry_helpers import (
    CANARY_OTLP_TOKEN,
    CANARY_PROVIDER_KEY,
    CANARY_SIDECAR_KEY,
    config,
    record,
)
from tiergate.telemetry import Telemetry

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_spans_follow_genai_conventions_and_continue_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    tel = Telemetry.from_config(
        config(telemetry={"log": None, "safety_log": None}),
        span_exporter=exporter,
        metric_reader=reader,
    )
    await tel.start()
    rec = record("r1", traceparent=TRACEPARENT)
    tel.record(rec)
    await tel.stop()
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    clients = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    a = server.attributes or {}
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "chat"
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (120, 30)
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    assert (a["tiergate.deployment"], a["tiergate.tier"], a["tiergate.fallbacks"]) == (
        "small",
        "small",
        1,
    )
    assert a["tiergate.idempotency"] == "miss" and a["tiergate.cost_usd"] == pytest.approx(0.000036)
    assert server.start_time == rec.start_ns and server.end_time == rec.start_ns + int(
        rec.latency_ms * 1e6
    )
    assert [e.name for e in server.events] == ["tiergate.safety.finding"]
    assert len(clients) == 2 and all(
        c.parent is not None and c.parent.span_id == server.context.span_id for c in clients
    )
    failed, served = clients
    assert failed.attributes is not None and failed.attributes["error.type"] == "server_error"
    assert failed.status.is_ok is False
    assert served.attributes is not None and served.attributes["tiergate.fallback"] is True
    assert served.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert served.start_time == rec.attempts[1].start_ns
    assert served.end_time == rec.attempts[1].start_ns + int(rec.attempts[1].ms * 1e6)
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
            "gen_ai.client.operation.time_to_first_chunk", "tiergate.requests"} <= names  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_otlp_http_export_to_a_real_receiver_without_leaking_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TG_TEST_OPENAI_KEY", CANARY_PROVIDER_KEY)
    monkeypatch.setenv("TG_TEST_OTLP_TOKEN", CANARY_OTLP_TOKEN)
    monkeypatch.setenv("TG_TEST_SIDECAR_KEY", CANARY_SIDECAR_KEY)
    received: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}
    auth: list[str] = []

    async def collect(request: web.Request) -> web.Response:
        assert request.headers["content-type"] == "application/x-protobuf"
        auth.append(request.headers.get("authorization", ""))
        received[request.path].append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    app.router.add_post("/v1/metrics", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    log, safety = io.BytesIO(), io.BytesIO()
    try:
        cfg = config(
            server={"api_keys": [{"env": "TG_TEST_SIDECAR_KEY"}]},
            telemetry={
                "log_text": True,
                "otlp": {
                    "endpoint": f"http://127.0.0.1:{port}",
                    "headers": {"authorization": {"env": "TG_TEST_OTLP_TOKEN"}},
                    "metrics_interval_s": 60,
                },
            },
        )
        tel = Telemetry.from_config(cfg, log_stream=log, safety_stream=safety)
        await tel.start()
        prompt = f"my key is {CANARY_PROVIDER_KEY} and theirs {CANARY_SIDECAR_KEY}; Authorization: Bearer {CANARY_OTLP_TOKEN}xyz"
        tel.record(
            record(
                "r1",
                traceparent=TRACEPARENT,
                prompt_text=prompt,
                completion_text=f"echo {CANARY_PROVIDER_KEY}",
            )
        )
        await tel.stop()  # flushes spans and metrics
    finally:
        await runner.cleanup()
    assert received["/v1/traces"] and received["/v1/metrics"]
    assert set(auth) == {CANARY_OTLP_TOKEN}  # the header is sent, from its credential
    traces = ExportTraceServiceRequest()
    for body in received["/v1/traces"]:
        traces.MergeFromString(body)
    spans = [s for rs in traces.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 3 and {s.trace_id.hex() for s in spans} == {TRACE_ID}
    server = next(s for s in spans if s.kind == s.SPAN_KIND_SERVER)
    attrs = {kv.key: kv.value for kv in server.attributes}
    assert attrs["gen_ai.provider.name"].string_value == "openai"
    assert attrs["gen_ai.usage.input_tokens"].int_value == 120
    metrics = ExportMetricsServiceRequest()
    for body in received["/v1/metrics"]:
        metrics.MergeFromString(body)
    names = {
        m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "tiergate.requests",
    } <= names
    # No canary anywhere: request log, safety stream, OTLP payloads, Prometheus text.
    line = orjson.loads(log.getvalue())
    assert "[REDACTED:api_key]" in line["prompt"] and "[REDACTED:bearer_token]" in line["prompt"]
    outputs = [
        log.getvalue(),
        safety.getvalue(),
        *received["/v1/traces"],
        *received["/v1/metrics"],
        tel.metrics.exposition(),
    ]
    for canary in (CANARY_PROVIDER_KEY, CANARY_OTLP_TOKEN, CANARY_SIDECAR_KEY):
        for out in outputs:
            assert canary.encode() not in out


async def test_unreachable_collector_does_not_break_stop() -> None:
    port = _free_port()  # nothing listens
    tel = Telemetry.from_config(
        config(
            telemetry={
                "log": None,
                "safety_log": None,
                "otlp": {"endpoint": f"http://127.0.0.1:{port}", "timeout_s": 1},
            }
        )
    )
    await tel.start()
    tel.record(record())
    await tel.stop(timeout_s=2)
