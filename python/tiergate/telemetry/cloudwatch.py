"""CloudWatch: Embedded Metric Format lines and/or batched PutMetricData through aiobotocore.

EMF: one line per request for the CloudWatch agent (it aggregates). PutMetricData: the
sink folds requests into statistic sets per minute, metric and dimensions, and a
background task sends them in batches of ``batch_size`` every ``flush_interval_s``, with
exponential backoff and jitter between retries. What cannot be sent stays buffered up to
``max_buffered`` data; beyond that the oldest are dropped and counted.

Dimensions are Route and Deployment (bounded to configured names by :class:`Metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from tiergate.config import CloudWatchConfig
from tiergate.telemetry.logline import JsonLines
from tiergate.telemetry.record import RequestRecord

__all__ = ["CloudWatchSink", "emf_line"]

log = logging.getLogger("tiergate.telemetry.cloudwatch")

# (metric name, unit, value from a record)
_METRICS: tuple[tuple[str, str, Callable[[RequestRecord], float | None]], ...] = (
    ("Requests", "Count", lambda r: 1.0),
    ("Errors", "Count", lambda r: 1.0 if r.status >= 500 or r.stream_error else 0.0),
    ("Latency", "Milliseconds", lambda r: r.latency_ms),
    ("TimeToFirstToken", "Milliseconds", lambda r: r.ttft_ms),
    ("InputTokens", "Count", lambda r: float(r.input_tokens)),
    ("OutputTokens", "Count", lambda r: float(r.output_tokens)),
    ("CostUSD", "None", lambda r: r.cost_usd),
    ("Fallbacks", "Count", lambda r: float(r.fallbacks)),
)


def emf_line(rec: RequestRecord, namespace: str, route: str, deployment: str) -> dict[str, Any]:
    values = {name: fn(rec) for name, _, fn in _METRICS}
    present = [(name, unit) for name, unit, _ in _METRICS if values[name] is not None]
    line: dict[str, Any] = {
        "_aws": {
            "Timestamp": rec.start_ns // 1_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Route", "Deployment"]],
                    "Metrics": [{"Name": n, "Unit": u} for n, u in present],
                }
            ],
        },
        "Route": route,
        "Deployment": deployment,
        "RequestId": rec.request_id,
    }
    line.update({n: values[n] for n, _ in present})
    return line


class _Stat:
    __slots__ = ("count", "max", "min", "sum")

    def __init__(self, v: float) -> None:
        self.count = 1
        self.sum = self.min = self.max = v

    def add(self, v: float) -> None:
        self.count += 1
        self.sum += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)


Key = tuple[int, str, str, str, str]  # minute, metric, unit, route, deployment


class CloudWatchSink:
    name = "cloudwatch"

    def __init__(
        self,
        cfg: CloudWatchConfig,
        labels: Callable[[RequestRecord], tuple[str, str]],
        on_drop: Callable[[int], None],
    ) -> None:
        self.cfg = cfg
        self._labels = labels
        self._on_drop = on_drop
        self._emf = JsonLines(cfg.emf_path) if cfg.mode in ("emf", "both") else None
        self._put = cfg.mode in ("put_metric_data", "both")
        self._pending: dict[Key, _Stat] = {}
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # data sent (tests, diagnostics)
        self.failed_calls = 0

    async def start(self) -> None:
        if not self._put:
            return
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        # Retries are ours (bounded, with backoff), not botocore's.
        aio = AioConfig(
            retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=10
        )
        kwargs: dict[str, Any] = {"region_name": self.cfg.region, "config": aio}
        if self.cfg.endpoint_url:
            kwargs["endpoint_url"] = self.cfg.endpoint_url
        if self.cfg.aws_access_key_id is not None and self.cfg.aws_secret_access_key is not None:
            kwargs["aws_access_key_id"] = self.cfg.aws_access_key_id.read()
            kwargs["aws_secret_access_key"] = self.cfg.aws_secret_access_key.read()
        self._client = await self._stack.enter_async_context(
            get_session().create_client("cloudwatch", **kwargs)
        )
        self._task = asyncio.create_task(self._flush_loop(), name="tiergate-cloudwatch")

    async def write(self, batch: list[RequestRecord]) -> None:
        lines = []
        for rec in batch:
            route, dep = self._labels(rec)
            if self._emf is not None:
                lines.append(emf_line(rec, self.cfg.namespace, route, dep))
            if self._put:
                minute = rec.start_ns // 60_000_000_000
                for name, unit, fn in _METRICS:
                    v = fn(rec)
                    if v is None:
                        continue
                    key = (minute, name, unit, route, dep)
                    stat = self._pending.get(key)
                    if stat is None:
                        self._pending[key] = _Stat(v)
                    else:
                        stat.add(v)
                self._bound()
        if self._emf is not None:
            self._emf.write(lines)

    def _bound(self) -> None:
        excess = len(self._pending) - self.cfg.max_buffered
        if excess > 0:
            for key in list(self._pending)[:excess]:  # insertion order: oldest first
                del self._pending[key]
            self._on_drop(excess)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.flush_interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Send everything pending, in batches; keep what could not be sent."""
        if self._client is None or not self._pending:
            return
        pending, self._pending = self._pending, {}
        items = list(pending.items())
        for i in range(0, len(items), self.cfg.batch_size):
            chunk = items[i : i + self.cfg.batch_size]
            if not await self._send(chunk):
                for key, stat in items[i:]:  # put back, ahead of newer data
                    cur = self._pending.pop(key, None)
                    if cur is not None:
                        stat.count += cur.count
                        stat.sum += cur.sum
                        stat.min = min(stat.min, cur.min)
                        stat.max = max(stat.max, cur.max)
                    self._pending[key] = stat
                self._pending = dict(sorted(self._pending.items(), key=lambda kv: kv[0][0]))
                self._bound()
                return

    async def _send(self, chunk: list[tuple[Key, _Stat]]) -> bool:
        data = [
            {
                "MetricName": name,
                "Dimensions": [
                    {"Name": "Route", "Value": route},
                    {"Name": "Deployment", "Value": dep},
                ],
                "Timestamp": minute * 60,
                "StatisticValues": {
                    "SampleCount": s.count,
                    "Sum": s.sum,
                    "Minimum": s.min,
                    "Maximum": s.max,
                },
                "Unit": unit,
            }
            for (minute, name, unit, route, dep), s in chunk
        ]
        for attempt in range(self.cfg.max_retries + 1):
            try:
                await self._client.put_metric_data(Namespace=self.cfg.namespace, MetricData=data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # botocore errors, connection errors
                self.failed_calls += 1
                log.warning(
                    "PutMetricData failed (attempt %d): %s", attempt + 1, type(exc).__name__
                )
                if attempt < self.cfg.max_retries:
                    await asyncio.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
                continue
            self.sent += len(data)
            return True
        return False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=max(5.0, self.cfg.flush_interval_s))
        await self._stack.aclose()
        if self._emf is not None:
            self._emf.close()
