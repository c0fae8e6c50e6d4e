"""OpenTelemetry: spans built after the fact from a RequestRecord, and the OTLP/HTTP exporters.

One SERVER span per request (``chat {route}``) continuing the caller's W3C
``traceparent``, one CLIENT span per attempt (``chat {model}``) as its child, each with
explicit start and end times taken from the record. Attributes follow the GenAI semantic
conventions plus ``tiergate.*``. Safety findings become span events
(``tiergate.safety.finding``), kinds and locations only.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tiergate.config import Config, OtlpConfig
from tiergate.telemetry.record import RequestRecord

__all__ = ["SpanBuilder", "make_meter_provider", "make_tracer_provider", "otlp_headers"]

_PROPAGATOR = TraceContextTextMapPropagator()


def otlp_headers(cfg: OtlpConfig) -> dict[str, str]:
    """Header values read from their credentials (env or file) at start, never logged."""
    return {name: cred.read() for name, cred in cfg.headers.items()}


def _resource(service: str) -> Resource:
    from tiergate import __version__

    return Resource.create({"service.name": service, "service.version": __version__})


def make_tracer_provider(
    cfg: OtlpConfig | None, exporter: SpanExporter | None = None, *, max_queue: int = 10_000
) -> TracerProvider | None:
    """A private TracerProvider (the global one is left alone), or None when traces are off."""
    if exporter is None:
        if cfg is None or not cfg.traces:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=cfg.endpoint.rstrip("/") + "/v1/traces",
            headers=otlp_headers(cfg),
            timeout=cfg.timeout_s,
        )
    provider = TracerProvider(resource=_resource(cfg.service_name if cfg else "tiergate"))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=max_queue, schedule_delay_millis=1000)
    )
    return provider


def make_meter_provider(
    cfg: OtlpConfig | None, reader: MetricReader | None = None
) -> MeterProvider | None:
    if reader is None:
        if cfg is None or not cfg.metrics:
            return None
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            endpoint=cfg.endpoint.rstrip("/") + "/v1/metrics",
            headers=otlp_headers(cfg),
            timeout=cfg.timeout_s,
        )
        reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=cfg.metrics_interval_s * 1000
        )
    return MeterProvider(
        metric_readers=[reader], resource=_resource(cfg.service_name if cfg else "tiergate")
    )


class SpanBuilder:
    __slots__ = ("_tiers", "_tracer")

    def __init__(self, provider: TracerProvider, config: Config) -> None:
        self._tracer = provider.get_tracer("tiergate")
        self._tiers = {name: dep.tier for name, dep in config.deployments.items()}

    def emit(self, rec: RequestRecord) -> None:
        parent = _PROPAGATOR.extract({"traceparent": rec.traceparent}) if rec.traceparent else None
        end_ns = rec.start_ns + int(rec.latency_ms * 1e6)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": rec.operation,
            "gen_ai.request.model": rec.request_model or rec.route,
            "gen_ai.usage.input_tokens": rec.input_tokens,
            "gen_ai.usage.output_tokens": rec.output_tokens,
            "gen_ai.request.stream": rec.stream,
            "http.response.status_code": rec.status,
            "tiergate.request_id": rec.request_id,
            "tiergate.surface": rec.surface,
            "tiergate.route": rec.route,
            "tiergate.tenant": rec.tenant,
            "tiergate.fallbacks": rec.fallbacks,
            "tiergate.hedged": rec.hedged,
            "tiergate.idempotency": rec.idempotency,
            "tiergate.cost_usd": rec.cost_usd,
            "tiergate.decision_us": rec.decision_us,
            "tiergate.attempts": len(rec.attempts),
        }
        optional = {
            "gen_ai.provider.name": rec.provider,
            "gen_ai.response.model": rec.response_model,
            "tiergate.deployment": rec.deployment,
            "tiergate.tier": rec.tier,
            "tiergate.predicted_quality": rec.predicted_quality,
            "tiergate.decision_reason": rec.decision_reason or None,
            "tiergate.stream_error": rec.stream_error,
            "gen_ai.usage.cache_read.input_tokens": rec.cached_tokens or None,
            "gen_ai.usage.reasoning.output_tokens": rec.reasoning_tokens or None,
            "gen_ai.response.time_to_first_chunk": None
            if rec.ttft_ms is None
            else rec.ttft_ms / 1000,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        if rec.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [rec.finish_reason]
        if rec.relaxed:
            attrs["tiergate.relaxed"] = list(rec.relaxed)
        failed = rec.status >= 500 or rec.stream_error is not None
        if rec.status >= 400 or failed:
            attrs["error.type"] = rec.error_type or rec.stream_error or str(rec.status)
        server = self._tracer.start_span(
            f"{rec.operation} {rec.route}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=rec.start_ns,
            attributes=attrs,
        )
        for f in rec.safety:
            server.add_event(
                "tiergate.safety.finding",
                {"tiergate.safety.kind": f.kind, "tiergate.safety.where": f.where,
                 "tiergate.safety.action": f.action, "tiergate.safety.location": f.location},
                timestamp=rec.start_ns,
            )  # fmt: skip
        if failed:
            server.set_status(Status(StatusCode.ERROR, attrs["error.type"]))
        ctx = trace.set_span_in_context(server)
        for i, a in enumerate(rec.attempts):
            a_attrs: dict[str, Any] = {
                "gen_ai.operation.name": rec.operation,
                "gen_ai.provider.name": a.provider,
                "gen_ai.request.model": a.model,
                "gen_ai.usage.input_tokens": a.input_tokens,
                "gen_ai.usage.output_tokens": a.output_tokens,
                "tiergate.deployment": a.deployment,
                "tiergate.attempt": i,
                "tiergate.fallback": i > 0 and not a.hedge,
                "tiergate.hedge": a.hedge,
                "tiergate.cancelled": a.cancelled,
                "tiergate.cost_usd": a.cost_usd,
            }
            tier = self._tiers.get(a.deployment)
            if tier is not None:
                a_attrs["tiergate.tier"] = tier
            if a.status is not None:
                a_attrs["http.response.status_code"] = a.status
            if a.finish_reason:
                a_attrs["gen_ai.response.finish_reasons"] = [a.finish_reason]
            if a.ttft_ms is not None:
                a_attrs["gen_ai.response.time_to_first_chunk"] = a.ttft_ms / 1000
            if (
                a.error_class is None
                and not a.cancelled
                and rec.response_model
                and a.deployment == rec.deployment
            ):
                a_attrs["gen_ai.response.model"] = rec.response_model
            if a.error_class is not None:
                a_attrs["error.type"] = a.error_class
            span = self._tracer.start_span(
                f"{rec.operation} {a.model}",
                context=ctx,
                kind=SpanKind.CLIENT,
                start_time=a.start_ns,
                attributes=a_attrs,
            )
            if a.error_class is not None:
                span.set_status(Status(StatusCode.ERROR, a.error_class))
            span.end(end_time=a.start_ns + int(a.ms * 1e6))
        server.end(end_time=max(end_ns, rec.start_ns))
