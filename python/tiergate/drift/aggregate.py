"""Hourly aggregates per deployment, folded from RequestRecords off the request path.

A row is one (hour, deployment) from one sidecar instance; every field is a sum (counts,
sums, sums of squares, histogram buckets), so rows from many pods, flushes and late
feedback add up at query time. Open hours (this one and the previous) are rewritten whole
at each flush; feedback or shadow results for an hour already closed go to a ``late`` file.

Layout: ``<sink>/date=YYYY-MM-DD/hour=HH/<instance>.jsonl`` (and ``<instance>-late-N.jsonl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from tiergate.drift.sink import DriftSink
from tiergate.drift.sketch import LAT_BUCKETS, QUALITY_BUCKETS, lat_bucket, quality_bucket
from tiergate.telemetry.record import RequestRecord

__all__ = ["Aggregate", "DriftAggregator", "hour_of"]

log = logging.getLogger("tiergate.drift")


def hour_of(ns: int) -> int:
    """Epoch seconds of the start of the UTC hour holding ``ns``."""
    s = ns // 1_000_000_000
    return s - s % 3600


@dataclass(slots=True)
class Aggregate:
    hour: int  # epoch seconds, UTC hour start
    deployment: str
    instance: str = ""
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0  # requests that needed at least one fallback
    hedged: int = 0
    refusals: int = 0
    schema_failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_sq: float = 0.0
    latency_hist: list[int] = field(default_factory=lambda: [0] * LAT_BUCKETS)
    ttft_hist: list[int] = field(default_factory=lambda: [0] * LAT_BUCKETS)
    quality_hist: list[int] = field(default_factory=lambda: [0] * QUALITY_BUCKETS)
    quality_sum: float = 0.0
    quality_n: int = 0
    feedback_n: int = 0
    feedback_sum: float = 0.0
    feedback_sq: float = 0.0
    shadow_n: int = 0
    shadow_agree: int = 0

    def fold(self, rec: RequestRecord) -> None:
        self.requests += 1
        if rec.status >= 500 or rec.stream_error is not None:
            self.errors += 1
        if rec.fallbacks:
            self.fallbacks += 1
        if rec.hedged:
            self.hedged += 1
        for f in rec.safety:
            if f.where == "output":
                if f.kind == "refusal":
                    self.refusals += 1
                elif f.kind == "schema_invalid":
                    self.schema_failures += 1
        self.input_tokens += rec.input_tokens
        self.output_tokens += rec.output_tokens
        self.cost_usd += rec.cost_usd
        self.cost_sq += rec.cost_usd * rec.cost_usd
        if rec.status < 400:
            self.latency_hist[lat_bucket(rec.latency_ms)] += 1
            if rec.ttft_ms is not None:
                self.ttft_hist[lat_bucket(rec.ttft_ms)] += 1
        if rec.predicted_quality is not None:
            self.quality_hist[quality_bucket(rec.predicted_quality)] += 1
            self.quality_sum += rec.predicted_quality
            self.quality_n += 1

    def row(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in _FIELDS}
        d["ts"] = datetime.fromtimestamp(self.hour, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return d


_FIELDS = tuple(f.name for f in fields(Aggregate))


def _served_by(rec: RequestRecord) -> str:
    if rec.deployment is not None:
        return rec.deployment
    return rec.attempts[-1].deployment if rec.attempts else "none"


class DriftAggregator:
    """Folds records into open hours and writes them to a sink periodically."""

    name = "drift"

    def __init__(
        self,
        sink: DriftSink | None,
        *,
        flush_interval_s: float = 60.0,
        feedback_capacity: int = 100_000,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._interval = flush_interval_s
        self._capacity = feedback_capacity
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self._clock = clock
        self._open: dict[int, dict[str, Aggregate]] = {}
        self._dirty: set[int] = set()
        self._late: dict[int, dict[str, Aggregate]] = {}
        self._late_seq = 0
        self._closed_before = 0  # hours before this were written whole and evicted
        # request_id → (deployment, start_ns), oldest first; the hour is worked out when
        # feedback arrives, not on every request. An OrderedDict, not a dict: at
        # capacity every request evicts the oldest, and a dict's first item is found by
        # walking past the slots of every key deleted since its last resize (about 100 µs
        # a request at 50,000 ids); OrderedDict.popitem(last=False) takes constant time.
        self._ids: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    # --- request path (O(1)) ---
    def remember(self, rec: RequestRecord) -> None:
        """Note which deployment and when a request was served, for later feedback."""
        ids = self._ids
        deployment = rec.deployment  # set whenever one served: no call for _served_by
        ids[rec.request_id] = (
            deployment if deployment is not None else _served_by(rec),
            rec.start_ns,
        )
        if len(ids) > self._capacity:
            ids.popitem(last=False)

    # --- off path ---
    def _agg(self, hour: int, deployment: str) -> Aggregate:
        table = self._open
        if hour < self._closed_before:
            table = self._late  # an hour already written and closed
        else:
            self._dirty.add(hour)
        by_dep = table.setdefault(hour, {})
        agg = by_dep.get(deployment)
        if agg is None:
            agg = by_dep[deployment] = Aggregate(hour, deployment, self.instance)
        return agg

    def _current_hour(self) -> int:
        return hour_of(int(self._clock() * 1e9))

    async def write(self, batch: list[RequestRecord]) -> None:
        for rec in batch:
            self._agg(hour_of(rec.start_ns), _served_by(rec)).fold(rec)

    def add_feedback(self, request_id: str, score: float) -> bool:
        """Fold a feedback score into its request's (deployment, hour); False when unknown."""
        where = self._ids.get(request_id)
        if where is None:
            return False
        agg = self._agg(hour_of(where[1]), where[0])
        agg.feedback_n += 1
        agg.feedback_sum += score
        agg.feedback_sq += score * score
        return True

    def add_shadow(self, deployment: str, hour: int, agreed: bool) -> None:
        agg = self._agg(hour, deployment)
        agg.shadow_n += 1
        agg.shadow_agree += int(agreed)

    def rows(self) -> list[dict[str, Any]]:
        """Every open aggregate as rows (tests, diagnostics)."""
        return [a.row() for by_dep in self._open.values() for a in by_dep.values()]

    async def flush(self) -> None:
        if self._sink is None:
            return
        for hour in sorted(self._dirty):
            rows = [a.row() for a in self._open.get(hour, {}).values()]
            await self._sink.put(hour, f"{self.instance}.jsonl", _jsonl(rows))
        self._dirty.clear()
        late, self._late = self._late, {}
        for hour, by_dep in late.items():
            self._late_seq += 1
            rows = [a.row() for a in by_dep.values()]
            await self._sink.put(hour, f"{self.instance}-late-{self._late_seq}.jsonl", _jsonl(rows))
        # Keep the current and previous hours open; older ones are final once written.
        keep_from = self._current_hour() - 3600
        for hour in [h for h in self._open if h < keep_from]:
            del self._open[hour]
        self._closed_before = max(self._closed_before, keep_from)

    async def start(self) -> None:
        if self._sink is not None:
            self._task = asyncio.create_task(self._loop(), name="tiergate-drift")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("drift aggregates not written: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._dirty.update(self._open)
        try:
            await self.flush()
        finally:
            if self._sink is not None:
                await self._sink.close()


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows)
