"""Per-model latency draws: lognormal time to first token and lognormal token rate.

Each model owns a :class:`random.Random` seeded from (``sim.seed``, model id), so a run
with the same seed and the same order of requests draws the same latencies.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

__all__ = ["Latency", "LatencyModel", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A process-independent 64-bit seed (``hash()`` is salted per process)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "big")


@dataclass(slots=True, frozen=True)
class Latency:
    ttft_s: float
    tokens_per_s: float

    def scaled(self, factor: float) -> Latency:
        """Everything ``factor`` times slower (a brownout)."""
        return Latency(self.ttft_s * factor, self.tokens_per_s / factor)

    def total_s(self, tokens: int) -> float:
        return self.ttft_s + tokens / self.tokens_per_s


class LatencyModel:
    __slots__ = ("_rng", "sigma", "tokens_per_s", "ttft_ms")

    def __init__(self, seed: int, model: str, ttft_ms: float, tokens_per_s: float, sigma: float):
        self._rng = random.Random(stable_seed("latency", seed, model))
        self.ttft_ms = ttft_ms
        self.tokens_per_s = tokens_per_s
        self.sigma = sigma

    def draw(self) -> Latency:
        """Median ``ttft_ms`` and ``tokens_per_s``, both with lognormal shape ``sigma``."""
        z1 = self._rng.gauss(0.0, 1.0)
        z2 = self._rng.gauss(0.0, 1.0)
        ttft = self.ttft_ms / 1000.0 * math.exp(self.sigma * z1)
        tps = self.tokens_per_s * math.exp(self.sigma * z2)
        return Latency(ttft, max(tps, 1e-3))
