"""Injectable faults (``POST /_sim/faults``) and per-model request-rate limits.

Kinds and what they do on every protocol:

=========  ==============================================================================
error      answer ``status`` (default 503) in the protocol's error shape
latency    time to first token times ``factor``, token rate divided by it (a brownout)
ratelimit  429 with ``Retry-After: retry_after_s`` and the protocol's throttling error
stall      streaming: the first chunk(s), then silence until the client goes away
           (at most :data:`STALL_MAX_S`); non-streaming: no answer, then the connection
           closes
cut        streaming: some chunks, then the connection closes without the terminal event;
           non-streaming: the connection closes part-way through the body
malformed  streaming: a chunk of invalid JSON; non-streaming: an invalid JSON body
stream_    streaming: some chunks, then the protocol's in-stream error for ``status``
error      (OpenAI ``data: {"error"}``, Anthropic ``event: error``, Gemini
           ``data: {"error"}``, Bedrock/SageMaker ``:message-type`` = exception frames);
           non-streaming: as ``error``
=========  ==============================================================================

A fault applies to one model id (``"*"`` = every model) with probability ``rate`` per
request, for ``duration_s`` seconds (default: until cleared). Draws come from a seeded RNG.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

__all__ = ["KINDS", "STALL_MAX_S", "Fault", "FaultKind", "FaultTable", "RateLimiter"]

FaultKind = Literal["error", "latency", "ratelimit", "stall", "cut", "malformed", "stream_error"]
KINDS: tuple[str, ...] = get_args(FaultKind)
STALL_MAX_S = 60.0

_ids = itertools.count(1)


@dataclass(slots=True)
class Fault:
    model: str
    kind: FaultKind
    rate: float = 1.0
    status: int = 503
    factor: float = 5.0
    retry_after_s: float = 1.0
    duration_s: float | None = None
    # Optional: the protocol's error type name to use instead of the one the status maps to
    # (e.g. "ModelNotReadyException" for a 429 on Bedrock).
    error_type: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    created: float = field(default_factory=time.monotonic)

    @classmethod
    def parse(cls, body: Any) -> Fault:
        """Validate a ``POST /_sim/faults`` body; ValueError names the bad field."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(body) - {
            "model",
            "kind",
            "rate",
            "status",
            "factor",
            "retry_after_s",
            "duration_s",
            "error_type",
        }
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("model: a model id (or '*') is required")
        kind = body.get("kind")
        if kind not in KINDS:
            raise ValueError(f"kind: one of {', '.join(KINDS)}")
        f = cls(model=model, kind=kind)
        for name, lo, hi in (
            ("rate", 0.0, 1.0),
            ("factor", 0.0, math.inf),
            ("retry_after_s", 0.0, math.inf),
            ("duration_s", 0.0, math.inf),
        ):
            if name in body and body[name] is not None:
                v = body[name]
                if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                    raise ValueError(f"{name}: a number in [{lo}, {hi}]")
                setattr(f, name, float(v))
        if "status" in body:
            s = body["status"]
            if isinstance(s, bool) or not isinstance(s, int) or not 100 <= s <= 599:
                raise ValueError("status: an HTTP status code")
            f.status = s
        et = body.get("error_type")
        if et is not None:
            if not isinstance(et, str):
                raise ValueError("error_type: a string")
            f.error_type = et
        if f.kind == "ratelimit" and "status" not in body:
            f.status = 429
        return f

    def active(self, now: float) -> bool:
        return self.duration_s is None or now - self.created < self.duration_s

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("created")
        return d


class FaultTable:
    __slots__ = ("_faults", "_rng")

    def __init__(self, seed: int) -> None:
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self, model: str | None = None) -> int:
        before = len(self._faults)
        self._faults = [f for f in self._faults if model is not None and f.model != model]
        return before - len(self._faults)

    def list(self) -> list[Fault]:
        now = time.monotonic()
        self._faults = [f for f in self._faults if f.active(now)]
        return list(self._faults)

    def draw(self, model: str) -> tuple[Fault | None, float]:
        """(the first firing non-latency fault, the product of firing latency factors)."""
        terminal: Fault | None = None
        factor = 1.0
        for f in self.list():
            if f.model not in (model, "*"):
                continue
            if f.rate < 1.0 and self._rng.random() >= f.rate:
                continue
            if f.kind == "latency":
                factor *= f.factor
            elif terminal is None:
                terminal = f
        return terminal, factor


class RateLimiter:
    """Requests per sliding minute; :meth:`admit` returns seconds to wait, or None."""

    __slots__ = ("_times", "rpm")

    def __init__(self, rpm: int) -> None:
        self.rpm = rpm
        self._times: deque[float] = deque()

    def admit(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] >= 60.0:
            self._times.popleft()
        if len(self._times) >= self.rpm:
            return max(0.001, 60.0 - (now - self._times[0]))
        self._times.append(now)
        return None
