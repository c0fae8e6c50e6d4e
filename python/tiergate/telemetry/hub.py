"""The telemetry facade: what the request path calls, and the workers that export off it.

Hooks (all O(1), none blocks, none raises on a full queue):

- ``record(rec)``                 once per request, after the response is sent
- ``record_safety(findings, request_id, tenant)``  when the safety scan found something
- ``ejection(deployment)``, ``cooldown(deployment)``, ``hedge(route, deployment)``
                                  from the dispatcher, as they happen
- ``add_feedback(request_id, score)``  from ``POST /v1/feedback``
- ``safety_policy(tenant)``       the tenant's compiled :class:`SafetyPolicy`
- ``shadow``                      the shadow evaluator (``maybe_schedule``), or None

Each exporter (request log, metrics, traces, CloudWatch, drift, safety stream) has its
own bounded buffer, exported in batches; a full buffer drops the item and counts it in
``tiergate_telemetry_dropped_total{sink}`` (and ``Telemetry.dropped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from tiergate.config import Config, SafetyPolicyConfig
from tiergate.safety.scan import Action, SafetyPolicy
from tiergate.telemetry.logline import JsonLines, finding_event, record_line
from tiergate.telemetry.metrics import Metrics
from tiergate.telemetry.record import RequestRecord, SafetyFinding

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when OTLP export is on
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["Telemetry"]

log = logging.getLogger("tiergate.telemetry")

T = TypeVar("T")
# Exporters take at most this many items at a time, and the worker yields to the event
# loop between slices: requests arriving meanwhile wait for one slice, not a whole batch.
BATCH = 16
# After the first item of a batch arrives, a worker waits this long for more, so that
# under load it wakes a few times a second instead of once per request.
LINGER_S = 0.05


class _Worker(Generic[T]):
    """A bounded buffer drained in batches by a short-lived task.

    ``offer`` is a list append (the request path pays nothing more); the first item of
    an idle buffer arms one timer, and ``LINGER_S`` later a task hands everything
    buffered to the exporter. No queue object and no resident task: under load the
    worker wakes a few times a second, idle it costs nothing.
    """

    __slots__ = (
        "_handle",
        "_items",
        "_on_drop",
        "_running",
        "_size",
        "_started",
        "_timer",
        "dropped",
        "name",
    )

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], Awaitable[None]],
        size: int,
        on_drop: Callable[[str], None],
    ) -> None:
        self.name = name
        self._handle = handle
        self._size = size
        self._items: list[T] = []
        self._on_drop = on_drop
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None
        self._started = False
        self.dropped = 0

    def offer(self, item: T) -> None:
        items = self._items
        if len(items) >= self._size:
            self.dropped += 1
            self._on_drop(self.name)
            return
        items.append(item)
        if self._timer is None and self._running is None and self._started:
            self._timer = asyncio.get_running_loop().call_later(LINGER_S, self._kick)

    def start(self) -> None:
        """From now on the first offer into an empty buffer arms the export timer."""
        self._started = True
        if self._items and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LINGER_S, self._kick)

    def _kick(self) -> None:
        self._timer = None
        if self._running is None and self._items:
            self._running = asyncio.get_running_loop().create_task(
                self._run(), name=f"tiergate-telemetry-{self.name}"
            )

    async def _run(self) -> None:
        try:
            while self._items:
                batch, self._items = self._items[:BATCH], self._items[BATCH:]
                try:
                    await self._handle(batch)
                except Exception:
                    log.exception(
                        "telemetry exporter %s failed on a batch of %d", self.name, len(batch)
                    )
                if self._items:
                    await asyncio.sleep(0)
        finally:
            self._running = None

    async def drain(self, timeout_s: float) -> None:
        """Export what is buffered now (bounded by ``timeout_s``), then stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._running is not None or self._items:
                    if self._running is None:
                        self._kick()
                    running = self._running
                    if running is not None:
                        await asyncio.shield(running)
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
            self._running = None
        self._started = False


def _policy(cfg: SafetyPolicyConfig) -> SafetyPolicy:
    kinds: dict[str, Action] = {str(k): v for k, v in cfg.kinds.items()}
    return SafetyPolicy(default=cfg.default, kinds=kinds)


class Telemetry:
    """Built once per config by :meth:`from_config`; ``start()`` before use, ``stop()`` to flush."""

    def __init__(
        self,
        config: Config,
        *,
        log_stream: IO[bytes] | None = None,
        safety_stream: IO[bytes] | None = None,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        drift_clock: Callable[[], float] = time.time,
    ) -> None:
        tc = config.telemetry
        self.config = config
        self._meter_provider: MeterProvider | None = None
        self._tracer_provider: TracerProvider | None = None
        otel = tc.otlp is not None or metric_reader is not None or span_exporter is not None
        if otel:
            from tiergate.telemetry.otel import make_meter_provider

            self._meter_provider = make_meter_provider(tc.otlp, metric_reader)
        meter = (
            self._meter_provider.get_meter("tiergate") if self._meter_provider is not None else None
        )
        self.metrics = Metrics(config, meter)
        self._workers: list[_Worker[RequestRecord]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._starters: list[Callable[[], Awaitable[None]]] = []
        size = tc.queue_size
        self._log: JsonLines | None = None
        if tc.log is not None:
            self._log = JsonLines(tc.log, log_stream)
            self._add("log", self._write_log, size)
        self._add("metrics", self._write_metrics, size)
        if otel:
            from tiergate.telemetry.otel import make_tracer_provider

            self._tracer_provider = make_tracer_provider(tc.otlp, span_exporter, max_queue=size)
        if self._tracer_provider is not None:
            from tiergate.telemetry.otel import SpanBuilder

            self._spans = SpanBuilder(self._tracer_provider, config)
            self._add("traces", self._write_traces, size)
        self.cloudwatch: Any = None
        if tc.cloudwatch is not None:
            from tiergate.telemetry.cloudwatch import CloudWatchSink

            cw = CloudWatchSink(
                tc.cloudwatch,
                lambda r: (self.metrics.route(r.route), self.metrics.deployment(r.deployment)),
                lambda n: self.metrics.dropped.add(n, "cloudwatch"),
            )
            self.cloudwatch = cw
            self._add("cloudwatch", cw.write, size)
            self._starters.append(cw.start)
            self._closers.append(cw.close)
        from tiergate.drift.aggregate import DriftAggregator
        from tiergate.drift.sink import make_sink

        dc = config.drift
        sink = (
            make_sink(dc.sink, config.base_dir, dc.region, dc.endpoint_url) if dc.enabled else None
        )
        self.drift = DriftAggregator(
            sink,
            flush_interval_s=dc.flush_interval_s,
            feedback_capacity=dc.feedback_capacity,
            clock=drift_clock,
        )
        if sink is not None:  # without a sink the hourly aggregates would go nowhere
            self._add("drift", self.drift.write, size)
        self._starters.append(self.drift.start)
        self._closers.append(self.drift.close)
        self._safety_log = (
            JsonLines(tc.safety_log, safety_stream) if tc.safety_log is not None else None
        )
        self._safety: _Worker[tuple[Sequence[SafetyFinding], str, str, int]] = _Worker(
            "safety", self._write_safety, size, self._dropped
        )
        self._default_policy = _policy(config.safety)
        self._policies = {
            name: _policy(t.safety) for name, t in config.tenants.items() if t.safety is not None
        }
        self.shadow: Any = None
        if dc.shadow:
            from tiergate.drift.shadow import ShadowEvaluator

            self.shadow = ShadowEvaluator(dc.shadow, self.drift, self.metrics)
            self._closers.append(self.shadow.close)
        self._started = False

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Telemetry:
        return cls(config, **kwargs)

    def _add(
        self, name: str, handle: Callable[[list[RequestRecord]], Awaitable[None]], size: int
    ) -> None:
        self._workers.append(_Worker(name, handle, size, self._dropped))

    def _dropped(self, sink: str) -> None:
        self.metrics.dropped.add(1, sink)

    @property
    def dropped(self) -> dict[str, int]:
        out = {w.name: w.dropped for w in self._workers}
        out["safety"] = self._safety.dropped
        return out

    # ---- lifecycle ----
    async def start(self) -> None:
        for s in self._starters:
            await s()
        for w in self._workers:
            w.start()
        self._safety.start()
        self._started = True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Drain every queue (bounded by ``timeout_s`` each), flush exporters, close files."""
        for w in self._workers:
            await w.drain(timeout_s)
        await self._safety.drain(timeout_s)
        for c in self._closers:
            try:
                await c()
            except Exception as exc:
                log.warning("telemetry exporter did not close cleanly: %s", type(exc).__name__)
        if self._tracer_provider is not None:
            await asyncio.to_thread(self._tracer_provider.shutdown)
        if self._meter_provider is not None:
            await asyncio.to_thread(self._meter_provider.shutdown, timeout_s * 1000)
        if self._log is not None:
            self._log.close()
        if self._safety_log is not None:
            self._safety_log.close()
        self._started = False

    # ---- hooks on the request path ----
    def record(self, rec: RequestRecord) -> None:
        """Hand one finished request to every exporter. O(1); drops (counted) when a queue is full."""
        self.drift.remember(rec)
        for w in self._workers:
            w.offer(rec)

    def record_safety(
        self, findings: Sequence[SafetyFinding], request_id: str, tenant: str
    ) -> None:
        """Safety findings to their own event stream (not the request log) and metrics."""
        if findings:
            self._safety.offer((findings, request_id, tenant, time.time_ns()))

    def reconfigure(self, config: Config) -> None:
        """Take the safety policies of a reloaded config (exporters keep their settings)."""
        self._default_policy = _policy(config.safety)
        self._policies = {
            name: _policy(t.safety) for name, t in config.tenants.items() if t.safety is not None
        }

    def safety_policy(self, tenant: str) -> SafetyPolicy:
        return self._policies.get(tenant, self._default_policy)

    def ejection(self, deployment: str) -> None:
        self.metrics.ejections.add(1, self.metrics.deployment(deployment))

    def cooldown(self, deployment: str) -> None:
        self.metrics.cooldowns.add(1, self.metrics.deployment(deployment))

    def hedge(self, route: str, deployment: str) -> None:
        """A hedged attempt was started (won/lost are counted from the record)."""
        self.metrics.hedges.add(
            1, self.metrics.route(route), self.metrics.deployment(deployment), "started"
        )

    def add_feedback(self, request_id: str, score: float) -> bool:
        return self.drift.add_feedback(request_id, score)

    # ---- workers ----
    async def _write_log(self, batch: list[RequestRecord]) -> None:
        assert self._log is not None
        text = self.config.telemetry.log_text
        self._log.write([record_line(r, include_text=text) for r in batch])

    async def _write_metrics(self, batch: list[RequestRecord]) -> None:
        for r in batch:
            self.metrics.observe_request(r)

    async def _write_traces(self, batch: list[RequestRecord]) -> None:
        for r in batch:
            self._spans.emit(r)

    async def _write_safety(
        self, batch: list[tuple[Sequence[SafetyFinding], str, str, int]]
    ) -> None:
        events: list[dict[str, Any]] = []
        for findings, request_id, tenant, ts in batch:
            self.metrics.observe_findings(findings)
            events.extend(finding_event(f, request_id, tenant, ts) for f in findings)
        if self._safety_log is not None:
            self._safety_log.write(events)

    def iter_workers(self) -> Iterable[str]:
        return [w.name for w in self._workers]
