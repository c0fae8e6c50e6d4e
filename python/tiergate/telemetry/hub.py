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
``tiergate_telemetry_dropped_total{sink}`` (and ``Telemetry.dropped``). The request log
and the metrics share one buffer when the core writes the one and tallies the other in
the same call (a log without prompt text, no OTel instruments); a drop counts for both.
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
from tiergate.telemetry.logline import (
    JsonLines,
    finding_event,
    json_lines,
    record_line,
    record_lines,
)
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
# Four request records are about 25 µs of log lines or 15 µs of metrics; at sixteen, the
# timer's callback (every worker's first slice) held the loop for about 250 µs, which
# a request at the 99th percentile waited for.
BATCH = 4
# After the first item of a batch arrives, a worker waits this long for more, so that
# under load it wakes a few times a second instead of once per request.
LINGER_S = 0.05


class _Linger:
    """One export timer shared by every worker of a :class:`Telemetry`: the first item
    offered to an idle hub arms it, and when it fires each worker with items exports.
    Under light load every batch holds a request or two, so a timer per worker (and a
    task per batch) would be most of what a request costs telemetry."""

    __slots__ = ("_handle", "_workers", "started")

    def __init__(self) -> None:
        self._workers: list[_Worker[Any]] = []
        self._handle: asyncio.TimerHandle | None = None
        self.started = False

    def arm(self) -> None:
        if self._handle is None and self.started:
            self._handle = asyncio.get_running_loop().call_later(LINGER_S, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        for w in self._workers:
            w.kick()


class _Worker(Generic[T]):
    """A bounded buffer drained in batches.

    ``offer`` is a list append (the request path pays nothing more) and arms the shared
    :class:`_Linger` timer; when it fires, everything buffered goes to the exporter in
    slices of ``BATCH``, yielding to the event loop between slices. An exporter that
    never waits (``inline``: a plain function) runs its slices in ``call_soon``
    callbacks, one per turn of the loop, and ``done`` (if any) once the buffer is empty;
    one that does I/O runs in a short-lived task.
    No queue object and no resident task: idle, a worker costs nothing.
    """

    __slots__ = (
        "_done",
        "_export",
        "_handle",
        "_items",
        "_linger",
        "_on_drop",
        "_running",
        "_size",
        "_slice",
        "also",
        "dropped",
        "name",
    )

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], Awaitable[None]] | None,
        size: int,
        on_drop: Callable[[str], None],
        linger: _Linger,
        inline: Callable[[list[T]], None] | None = None,
        also: tuple[str, ...] = (),
        done: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._done = done
        # Sinks this worker exports for besides its own (each drop is theirs too).
        self.also = also
        self._handle = handle
        self._export = inline
        self._size = size
        self._items: list[T] = []
        self._on_drop = on_drop
        self._linger = linger
        self._running: asyncio.Task[None] | None = None
        self._slice: asyncio.Handle | None = None  # the next inline slice, when pending
        self.dropped = 0
        linger._workers.append(self)

    def offer(self, item: T) -> None:
        items = self._items
        if len(items) >= self._size:
            self.dropped += 1
            self._on_drop(self.name)
            for sink in self.also:
                self._on_drop(sink)
            return
        items.append(item)
        linger = self._linger
        if linger._handle is None:  # armed already: the usual case under load
            linger.arm()

    @property
    def pending(self) -> bool:
        return bool(self._items)

    def kick(self) -> None:
        if self._running is not None or self._slice is not None or not self._items:
            return
        if self._export is not None:
            # Scheduled, not run here: each worker's slice is its own turn of the loop.
            self._slice = asyncio.get_running_loop().call_soon(self._run_slice)
        else:
            self._running = asyncio.get_running_loop().create_task(
                self._run(), name=f"tiergate-telemetry-{self.name}"
            )

    def _take(self) -> list[T]:
        batch, self._items = self._items[:BATCH], self._items[BATCH:]
        return batch

    def _failed(self, batch: list[T]) -> None:
        log.exception("telemetry exporter %s failed on a batch of %d", self.name, len(batch))

    def _export_slice(self) -> None:
        export = self._export
        assert export is not None
        batch = self._take()
        try:
            export(batch)
        except Exception:
            self._failed(batch)

    def _run_slice(self) -> None:
        self._slice = None
        self._export_slice()
        if self._items:
            self._slice = asyncio.get_running_loop().call_soon(self._run_slice)
        else:
            self._finish()

    def _finish(self) -> None:
        if self._done is not None:
            try:
                self._done()
            except Exception:
                log.exception("telemetry exporter %s failed to finish", self.name)

    async def _run(self) -> None:
        handle = self._handle
        assert handle is not None
        try:
            while self._items:
                batch = self._take()
                try:
                    await handle(batch)
                except Exception:
                    self._failed(batch)
                if self._items:
                    await asyncio.sleep(0)
        finally:
            self._running = None

    async def drain(self, timeout_s: float) -> None:
        """Export what is buffered now (bounded by ``timeout_s``)."""
        if self._export is not None:
            if self._slice is not None:
                self._slice.cancel()
                self._slice = None
            while self._items:
                self._export_slice()
            self._finish()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._running is not None or self._items:
                    if self._running is None:
                        self.kick()
                    running = self._running
                    if running is not None:
                        await asyncio.shield(running)
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
            self._running = None


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
        self._linger = _Linger()
        self._workers: list[_Worker[RequestRecord]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._starters: list[Callable[[], Awaitable[None]]] = []
        size = tc.queue_size
        self._log: JsonLines | None = None
        if tc.log is not None:
            self._log = JsonLines(tc.log, log_stream)
        if self._log is not None and not tc.log_text and self.metrics.tallies:
            # One worker, one core call per batch: each record read once for its log
            # line and its metrics.
            self._add(
                "log",
                None,
                size,
                inline=self._write_log_and_metrics,
                also=("metrics",),
                done=self._log.flush,
            )
        else:
            if self._log is not None:
                self._add("log", None, size, inline=self._write_log, done=self._log.flush)
            self._add("metrics", None, size, inline=self._write_metrics)
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
            "safety", None, size, self._dropped, self._linger, inline=self._write_safety
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
        # Read per request by the server; the config's attribute chain costs more.
        self.log_text = tc.log_text

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Telemetry:
        return cls(config, **kwargs)

    def _add(
        self,
        name: str,
        handle: Callable[[list[RequestRecord]], Awaitable[None]] | None,
        size: int,
        inline: Callable[[list[RequestRecord]], None] | None = None,
        also: tuple[str, ...] = (),
        done: Callable[[], None] | None = None,
    ) -> None:
        self._workers.append(
            _Worker(name, handle, size, self._dropped, self._linger, inline, also, done)
        )

    def _dropped(self, sink: str) -> None:
        self.metrics.dropped.add(1, sink)

    @property
    def dropped(self) -> dict[str, int]:
        out = {w.name: w.dropped for w in self._workers}
        out.update((sink, w.dropped) for w in self._workers for sink in w.also)
        out["safety"] = self._safety.dropped
        return out

    # ---- lifecycle ----
    async def start(self) -> None:
        for s in self._starters:
            await s()
        self._linger.started = True
        if self._safety.pending or any(w.pending for w in self._workers):
            self._linger.arm()
        self._started = True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Drain every queue (bounded by ``timeout_s`` each), flush exporters, close files."""
        self._linger.started = False
        self._linger.cancel()
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
    def _write_log(self, batch: list[RequestRecord]) -> None:
        assert self._log is not None
        if self.config.telemetry.log_text:
            self._log.hold(json_lines([record_line(r, include_text=True) for r in batch]))
        else:
            self._log.hold(record_lines(batch))

    def _write_log_and_metrics(self, batch: list[RequestRecord]) -> None:
        assert self._log is not None
        self._log.hold(self.metrics.log_lines(batch))

    def _write_metrics(self, batch: list[RequestRecord]) -> None:
        self.metrics.observe_requests(batch)

    async def _write_traces(self, batch: list[RequestRecord]) -> None:
        for r in batch:
            self._spans.emit(r)

    def _write_safety(self, batch: list[tuple[Sequence[SafetyFinding], str, str, int]]) -> None:
        events: list[dict[str, Any]] = []
        for findings, request_id, tenant, ts in batch:
            self.metrics.observe_findings(findings)
            events.extend(finding_event(f, request_id, tenant, ts) for f in findings)
        if self._safety_log is not None:
            self._safety_log.write(events)

    def iter_workers(self) -> Iterable[str]:
        return [name for w in self._workers for name in (w.name, *w.also)]
