"""The per-request JSON line and the JSON-lines writers (request log, safety stream, EMF).

A log line holds what DESIGN.md §6 lists and nothing else: no header, no key, no prompt
text unless ``telemetry.log_text`` is on, and then redacted by the safety detectors.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from tiergate import _core
from tiergate.safety.detectors import redact_text
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

__all__ = [
    "JsonLines",
    "attempt_fields",
    "finding_event",
    "json_lines",
    "record_line",
    "record_lines",
]


_second: list[Any] = [None, ""]  # the last second formatted, and its text
# ".000Z" … ".999Z": formatting the milliseconds cost more than the rest of the stamp.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def _iso(ns: int) -> str:
    """``2026-11-22T03:07:17.331Z``: UTC, milliseconds (the second's text is reused)."""
    sec, ms = divmod(ns // 1_000_000, 1000)
    cache = _second
    if cache[0] != sec:
        cache[0], cache[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    stamp: str = cache[1]
    return stamp + _MILLIS[ms]


def attempt_fields(a: AttemptRecord) -> dict[str, Any]:
    """One attempt as orjson would write the dataclass, built by hand: orjson's own
    dataclass path costs about three times as much (a test keeps the two equal)."""
    return {
        "deployment": a.deployment,
        "provider": a.provider,
        "model": a.model,
        "start_ns": a.start_ns,
        "ms": a.ms,
        "status": a.status,
        "error_class": a.error_class,
        "hedge": a.hedge,
        "cancelled": a.cancelled,
        "ttft_ms": a.ttft_ms,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "cost_usd": a.cost_usd,
        "finish_reason": a.finish_reason,
    }


def record_line(rec: RequestRecord, *, include_text: bool = False) -> dict[str, Any]:
    """The log line's fields for one request, for orjson."""
    line: dict[str, Any] = {
        "ts": _iso(rec.start_ns),
        "event": "request",
        "request_id": rec.request_id,
        "tenant": rec.tenant,
        "surface": rec.surface,
        "operation": rec.operation,
        "route": rec.route,
        "deployment": rec.deployment,
        "provider": rec.provider,
        "tier": rec.tier,
        "response_model": rec.response_model,
        "status": rec.status,
        "error_type": rec.error_type,
        "finish_reason": rec.finish_reason,
        "stream": rec.stream,
        "stream_error": rec.stream_error,
        "attempts": [attempt_fields(a) for a in rec.attempts],
        "fallbacks": rec.fallbacks,
        "hedged": rec.hedged,
        "idempotency": rec.idempotency,
        "ttft_ms": rec.ttft_ms,  # ms values are rounded where they are measured
        "latency_ms": rec.latency_ms,
        "tokens": {
            "input": rec.input_tokens,
            "output": rec.output_tokens,
            "cached": rec.cached_tokens,
            "reasoning": rec.reasoning_tokens,
        },
        "cost_usd": rec.cost_usd,
        "predicted_quality": rec.predicted_quality,
        "predicted_latency_ms": rec.predicted_latency_ms,
        "decision_us": rec.decision_us,
        "decision_reason": rec.decision_reason,
        "relaxed": rec.relaxed,
        # Kinds and actions only; the detailed events are the safety stream's.
        "safety": [f"{f.kind}:{f.action}" for f in rec.safety] if rec.safety else [],
    }
    if include_text:
        if rec.prompt_text is not None:
            line["prompt"] = redact_text(rec.prompt_text)
        if rec.completion_text is not None:
            line["completion"] = redact_text(rec.completion_text)
    return line


def record_lines(records: list[RequestRecord]) -> bytes:
    """``orjson.dumps(record_line(r))`` and a newline for each record (text never
    included), written by the core in one call at a fraction of the cost."""
    return _core.request_log_lines(records)


def finding_event(f: SafetyFinding, request_id: str, tenant: str, ts_ns: int) -> dict[str, Any]:
    return {
        "ts": _iso(ts_ns),
        "event": "safety_finding",
        "request_id": request_id,
        "tenant": tenant,
        "kind": f.kind,
        "where": f.where,
        "action": f.action,
        "location": f.location,
    }


# At most this many bytes of lines wait in a JsonLines for its flush.
HOLD_BYTES = 1 << 16


def json_lines(objs: list[dict[str, Any]]) -> bytes:
    """``objs`` as JSON lines, each with its newline."""
    return b"".join(orjson.dumps(o, option=orjson.OPT_APPEND_NEWLINE) for o in objs)


class JsonLines:
    """Appends JSON lines to stdout (``"-"``) or a file; one write and flush per batch,
    or, for lines given to :meth:`hold`, one per :meth:`flush`."""

    __slots__ = ("_held", "_held_bytes", "_out", "_owned", "target")

    def __init__(self, target: str | Path, stream: IO[bytes] | None = None) -> None:
        self.target = str(target)
        self._owned = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        if stream is not None:
            self._out: IO[bytes] = stream
        elif self.target == "-":
            self._out = sys.stdout.buffer
        else:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = path.open("ab")
            self._owned = True

    def write(self, objs: list[dict[str, Any]]) -> None:
        self.write_bytes(json_lines(objs))

    def write_bytes(self, lines: bytes) -> None:
        """Lines already serialised, each with its newline."""
        if not lines:
            return
        self._out.write(lines)
        self._out.flush()

    def hold(self, lines: bytes) -> None:
        """Lines already serialised, each with its newline, written at the next
        :meth:`flush`: an exporter that takes a queue a slice at a time writes it in one
        system call (in a pod, each write to stdout wakes the log collector)."""
        if lines:
            self._held.append(lines)
            self._held_bytes += len(lines)
            if self._held_bytes >= HOLD_BYTES:  # a queue that never empties: memory bounded
                self.flush()

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = []
            self._held_bytes = 0
            self.write_bytes(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._out.close()
