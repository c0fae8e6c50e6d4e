"""Metrics: one set of instruments, exposed to Prometheus and (when configured) OTLP.

Every instrument exists twice: a ``prometheus_client`` family in this hub's own
registry (``GET /metrics``) and an OpenTelemetry instrument (the GenAI semantic
conventions' names and attributes) when an OTel meter is given. Label values are
bounded: routes, deployments and tenants not in the config are reported as ``other``.

Prometheus names (OTel names in brackets):

- ``gen_ai_client_operation_duration_seconds`` [gen_ai.client.operation.duration]
- ``gen_ai_client_token_usage`` [gen_ai.client.token.usage], label ``token_type``
- ``gen_ai_client_operation_time_to_first_chunk_seconds`` [gen_ai.client.operation.time_to_first_chunk]
- ``tiergate_requests_total{route,deployment,outcome}`` — outcome: ok, client_error, error
- ``tiergate_attempts_total{deployment,outcome}`` — outcome: ok or the error class
- ``tiergate_cost_usd_total{route,deployment,tenant}``
- ``tiergate_fallbacks_total{route}``, ``tiergate_hedges_total{route,deployment,outcome}``
- ``tiergate_ejections_total{deployment}``, ``tiergate_cooldowns_total{deployment}``
- ``tiergate_idempotency_total{outcome}``, ``tiergate_decision_seconds``
- ``tiergate_telemetry_dropped_total{sink}``, ``tiergate_safety_findings_total{kind,where,action}``
- ``tiergate_shadow_total{route,outcome}`` — outcome: agree, disagree, error, skipped
- ``tiergate_route_latency_budget_seconds{route}``, ``tiergate_tenant_daily_spend_budget_usd{tenant}``
  (from the config, for alert rules)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tiergate import _core
from tiergate.config import Config
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Metrics"]

# The GenAI semantic conventions' advised bucket boundaries.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)
DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05)

# Prometheus label → OTel attribute.
_OTEL_KEY = {
    "route": "gen_ai.request.model",
    "deployment": "tiergate.deployment",
    "provider": "gen_ai.provider.name",
    "operation": "gen_ai.operation.name",
    "response_model": "gen_ai.response.model",
    "token_type": "gen_ai.token.type",
    "error_type": "error.type",
}


class _Instrument:
    """One Prometheus family kept in plain dicts, and optionally its OTel twin.

    prometheus_client's children take a lock and walk their buckets in Python on every
    call; a sidecar observes a dozen values per request, so the values live here (one
    dict update per observation, all on the event loop's thread) and become metric
    families only when ``/metrics`` is scraped (:meth:`collect`).
    """

    __slots__ = ("_bounds", "_doc", "_labels", "_name", "_otel", "_values")

    def __init__(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        otel: Any,
        bounds: Sequence[float] | None = None,
    ) -> None:
        self._name = name
        self._doc = doc
        self._otel = otel
        self._labels = tuple(labels)
        # Histogram: per label values, one count per bucket (the last is +Inf), then the sum.
        self._bounds = tuple(float(b) for b in bounds) if bounds is not None else None
        self._values: dict[tuple[str, ...], Any] = {}

    def _attrs(self, values: Sequence[str]) -> dict[str, str]:
        return {
            _OTEL_KEY.get(k, f"tiergate.{k}"): v for k, v in zip(self._labels, values, strict=True)
        }

    def add(self, amount: float, *values: str) -> None:
        self.add_at(values, amount)

    def observe(self, value: float, *values: str) -> None:
        self.observe_at(values, value)

    def cell(self, values: tuple[str, ...]) -> list[Any]:
        """The mutable cell of one label set: ``[total]`` for a counter, the bucket
        counts then the sum for a histogram. Created on first use, so a series appears
        in ``/metrics`` only once something was observed in it."""
        cell = self._values.get(values)
        if cell is None:
            bounds = self._bounds
            cell = [0.0] if bounds is None else [0] * (len(bounds) + 1) + [0.0]
            self._values[values] = cell
        return cell

    def put(self, values: tuple[str, ...], cell: list[Any]) -> None:
        """Set the cell of one label set (the core's tally hands over its totals)."""
        self._values[values] = cell

    def add_at(self, values: tuple[str, ...], amount: float) -> None:
        self.cell(values)[0] += amount
        if self._otel is not None:
            self._otel.add(amount, self._attrs(values))

    def observe_at(self, values: tuple[str, ...], value: float) -> None:
        bounds = self._bounds
        assert bounds is not None
        cell = self.cell(values)
        cell[bisect_left(bounds, value)] += 1
        cell[-1] += value
        if self._otel is not None:
            self._otel.record(value, self._attrs(values))

    def collect(self) -> Metric:
        labels = list(self._labels)
        if self._bounds is None:
            counter = CounterMetricFamily(self._name, self._doc, labels=labels)
            for values, total in self._values.items():
                counter.add_metric(list(values), total[0])
            return counter
        family = HistogramMetricFamily(self._name, self._doc, labels=labels)
        names = [_bound_text(b) for b in self._bounds] + ["+Inf"]
        for values, cell in self._values.items():
            running, buckets = 0, []
            for name, count in zip(names, cell, strict=False):
                running += count
                buckets.append((name, running))
            family.add_metric(list(values), buckets, cell[-1])
        return family


def _bound_text(bound: float) -> str:
    # As prometheus_client writes bucket bounds (floatToGoString): 1.0, 0.01, 1e-05.
    return repr(float(bound))


class _Collector(Collector):
    """Hands the instruments' values to the registry at scrape time, after ``before``
    (which brings the core's tally in)."""

    def __init__(self, instruments: list[_Instrument], before: Callable[[], None]) -> None:
        self._instruments = instruments
        self._before = before

    def collect(self) -> Iterable[Metric]:
        self._before()
        return [i.collect() for i in self._instruments]


class Metrics:
    """Every metric tiergate exports; fed by the hub's metrics worker and direct counters."""

    def __init__(self, config: Config, meter: Meter | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._routes = frozenset(config.route_names())
        self._deployments = frozenset(config.deployments)
        self._tenants = frozenset(config.tenants)
        self._tiers = {name: dep.tier for name, dep in config.deployments.items()}
        self._otel = meter is not None
        r = self.registry
        m = meter

        instruments: list[_Instrument] = []

        def counter(
            name: str, doc: str, labels: Sequence[str], otel_name: str, unit: str = "1"
        ) -> _Instrument:
            otel = (
                m.create_counter(otel_name, unit=unit, description=doc) if m is not None else None
            )
            instruments.append(_Instrument(name, doc, labels, otel))
            return instruments[-1]

        def histogram(
            name: str,
            doc: str,
            labels: Sequence[str],
            buckets: Sequence[float],
            otel_name: str,
            unit: str,
        ) -> _Instrument:
            otel = (
                m.create_histogram(
                    otel_name,
                    unit=unit,
                    description=doc,
                    explicit_bucket_boundaries_advisory=buckets,
                )
                if m is not None
                else None
            )
            instruments.append(_Instrument(name, doc, labels, otel, buckets))
            return instruments[-1]

        gen = ("operation", "provider", "route", "deployment", "response_model")
        self.duration = histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration, end to end as the caller saw it.",
            (*gen, "error_type"),
            DURATION_BUCKETS,
            "gen_ai.client.operation.duration",
            "s",
        )
        self.tokens = histogram(
            "gen_ai_client_token_usage",
            "Tokens used per operation, by token type.",
            (*gen, "token_type"),
            TOKEN_BUCKETS,
            "gen_ai.client.token.usage",
            "{token}",
        )
        self.ttft = histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first token (chunk) of the answer.",
            gen,
            TTFT_BUCKETS,
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
        )
        self.requests = counter(
            "tiergate_requests", "Requests by route, serving deployment and outcome.",
            ("route", "deployment", "outcome"), "tiergate.requests", "{request}",
        )  # fmt: skip
        self.attempts = counter(
            "tiergate_attempts", "Upstream attempts by deployment and outcome (ok or error class).",
            ("deployment", "outcome"), "tiergate.attempts", "{attempt}",
        )  # fmt: skip
        self.cost = counter(
            "tiergate_cost_usd", "Spend in USD from the deployments' prices, hedges included.",
            ("route", "deployment", "tenant"), "tiergate.cost", "USD",
        )  # fmt: skip
        self.fallbacks = counter(
            "tiergate_fallbacks",
            "Fallbacks to another deployment.",
            ("route",),
            "tiergate.fallbacks",
        )
        self.hedges = counter(
            "tiergate_hedges",
            "Hedged attempts: started, won, lost.",
            ("route", "deployment", "outcome"),
            "tiergate.hedges",
        )
        self.ejections = counter(
            "tiergate_ejections",
            "Deployments ejected by passive health checks.",
            ("deployment",),
            "tiergate.ejections",
        )
        self.cooldowns = counter(
            "tiergate_cooldowns",
            "Cool-downs from Retry-After or rate-limit headers.",
            ("deployment",),
            "tiergate.cooldowns",
        )
        self.idempotency = counter(
            "tiergate_idempotency",
            "Idempotency outcomes: miss, coalesced, replay.",
            ("outcome",),
            "tiergate.idempotency",
        )
        self.decision = histogram(
            "tiergate_decision_seconds",
            "Routing decision time.",
            (),
            DECISION_BUCKETS,
            "tiergate.decision.duration",
            "s",
        )
        self.dropped = counter(
            "tiergate_telemetry_dropped", "Telemetry items dropped because an exporter's queue was full.",
            ("sink",), "tiergate.telemetry.dropped",
        )  # fmt: skip
        self.findings = counter(
            "tiergate_safety_findings",
            "Safety findings by kind, side and action.",
            ("kind", "where", "action"),
            "tiergate.safety.findings",
        )
        self.shadow = counter(
            "tiergate_shadow",
            "Shadow evaluations by outcome: agree, disagree, error, skipped.",
            ("route", "outcome"),
            "tiergate.shadow",
        )
        budget = Gauge(
            "tiergate_route_latency_budget_seconds",
            "Configured latency budget per route.",
            ("route",),
            registry=r,
        )
        for name, route in config.routes.items():
            if route.latency_budget_ms is not None:
                budget.labels(name).set(route.latency_budget_ms / 1000)
        spend = Gauge(
            "tiergate_tenant_daily_spend_budget_usd",
            "Configured daily spend limit per tenant.",
            ("tenant",),
            registry=r,
        )
        for name, tenant in config.tenants.items():
            if tenant.daily_spend_usd is not None:
                spend.labels(name).set(tenant.daily_spend_usd)
        # Without OTel instruments (which take their attributes with every value), the
        # request-derived values are tallied by the core and brought in when scraped.
        self._tally: _core.RequestTally | None = None
        if not self._otel:
            self._tally = _core.RequestTally(
                list(self._routes), list(self._deployments), list(self._tenants),
                list(DURATION_BUCKETS), [float(b) for b in TOKEN_BUCKETS],
                list(TTFT_BUCKETS), list(DECISION_BUCKETS),
            )  # fmt: skip
        self._tallied = {
            _core.TALLY_REQUESTS: self.requests,
            _core.TALLY_DURATION: self.duration,
            _core.TALLY_TOKENS: self.tokens,
            _core.TALLY_TTFT: self.ttft,
            _core.TALLY_COST: self.cost,
            _core.TALLY_FALLBACKS: self.fallbacks,
            _core.TALLY_ATTEMPTS: self.attempts,
            _core.TALLY_HEDGES: self.hedges,
            _core.TALLY_IDEMPOTENCY: self.idempotency,
            _core.TALLY_DECISION: self.decision,
        }
        r.register(_Collector(instruments, self.drain))

    # Bounded label values.
    def route(self, name: str) -> str:
        return name if name in self._routes else "other"

    def deployment(self, name: str | None) -> str:
        if name is None:
            return "none"
        return name if name in self._deployments else "other"

    def tenant(self, name: str) -> str:
        if not name:
            return "default"
        return name if name in self._tenants else "other"

    def observe_requests(self, records: list[RequestRecord]) -> None:
        """Count finished requests (one core call for the batch without OTel)."""
        if self._tally is not None:
            self._tally.observe(records)
            return
        for rec in records:
            self._observe_each(rec)

    @property
    def tallies(self) -> bool:
        """Whether the core tallies the request metrics (no OTel instruments attached):
        then :meth:`log_lines` counts what it writes."""
        return self._tally is not None

    def log_lines(self, records: list[RequestRecord]) -> bytes:
        """The records' log lines (``logline.record_lines``), the records counted as
        :meth:`observe_requests` counts them when the core tallies: one read of each
        record for both."""
        return _core.request_log_lines(records, self._tally)

    def drain(self) -> None:
        """Bring the cells the core's tally changed into the instruments (at scrape
        time: ``exposition`` and the registry's collector call it)."""
        if self._tally is None:
            return
        tallied = self._tallied
        for family, labels, cell in self._tally.drain():
            tallied[family].put(labels, cell)

    def _observe_each(self, rec: RequestRecord) -> None:
        """One request's values, each given to its instrument (and OTel twin)."""
        status = rec.status
        if status < 400 and rec.stream_error is None:
            outcome, error_type = "ok", ""
        else:
            outcome = "client_error" if status < 500 else "error"
            error_type = rec.error_type or ("stream_error" if rec.stream_error else str(status))
        route = self.route(rec.route)
        deployment = rec.deployment
        dep = self.deployment(deployment)
        self.requests.add_at((route, dep, outcome), 1)
        provider = rec.provider or "none"
        model = rec.response_model or "none"
        if deployment is not None and dep == "other":
            model = "other"
        op = rec.operation
        self.duration.observe_at(
            (op, provider, route, dep, model, error_type), rec.latency_ms / 1000
        )
        if rec.input_tokens:
            self.tokens.observe_at((op, provider, route, dep, model, "input"), rec.input_tokens)
        if rec.output_tokens:
            self.tokens.observe_at((op, provider, route, dep, model, "output"), rec.output_tokens)
        if rec.ttft_ms is not None:
            self.ttft.observe_at((op, provider, route, dep, model), rec.ttft_ms / 1000)
        if rec.cost_usd:
            self.cost.add_at((route, dep, self.tenant(rec.tenant)), rec.cost_usd)
        if rec.fallbacks:
            self.fallbacks.add_at((route,), rec.fallbacks)
        for a in rec.attempts:
            self.attempts.add_at(self._attempt_labels(a), 1)
            if a.hedge:
                self._hedge(route, a)
        if rec.idempotency != "none":
            self.idempotency.add_at((rec.idempotency,), 1)
        if rec.decision_us:
            self.decision.observe_at((), rec.decision_us / 1e6)

    def _attempt_labels(self, a: AttemptRecord) -> tuple[str, str]:
        return (
            self.deployment(a.deployment),
            a.error_class or ("cancelled" if a.cancelled else "ok"),
        )

    def _hedge(self, route: str, a: AttemptRecord) -> None:
        self.hedges.add_at(
            (route, self.deployment(a.deployment), "lost" if a.cancelled else "won"), 1
        )

    def observe_findings(self, findings: Iterable[SafetyFinding]) -> None:
        for f in findings:
            self.findings.add(1, f.kind, f.where, f.action)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
