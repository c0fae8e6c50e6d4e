"""Mergeable sketches: fixed log-bucket histograms, summed element-wise across pods and hours."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "LAT_BUCKETS",
    "QUALITY_BUCKETS",
    "lat_bucket",
    "lat_bucket_mid",
    "quality_bucket",
    "quantile",
]

# Latency buckets: bucket i holds [LAT_MIN_MS·G^i, LAT_MIN_MS·G^(i+1)) ms, G = 2^(1/4) (≈19 %
# wide, so a quantile is known to ±9 %); bucket 0 also holds everything below 1 ms and the
# last one everything above ≈4.6 hours.
LAT_MIN_MS = 1.0
LAT_STEPS_PER_DOUBLING = 4
LAT_BUCKETS = 96
QUALITY_BUCKETS = 10  # [0, 0.1), …, [0.9, 1.0]

_INV_LOG_G = LAT_STEPS_PER_DOUBLING / math.log(2)


def lat_bucket(ms: float) -> int:
    if ms <= LAT_MIN_MS:
        return 0
    return min(LAT_BUCKETS - 1, int(math.log(ms / LAT_MIN_MS) * _INV_LOG_G))


def lat_bucket_mid(i: int) -> float:
    """Geometric middle of bucket ``i`` in ms."""
    return LAT_MIN_MS * 2 ** ((i + 0.5) / LAT_STEPS_PER_DOUBLING)


def quality_bucket(q: float) -> int:
    return min(QUALITY_BUCKETS - 1, max(0, int(q * QUALITY_BUCKETS)))


def quantile(hist: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (ms) of a latency histogram, at its bucket's geometric middle."""
    total = sum(hist)
    if total <= 0:
        return None
    target = q * total
    acc = 0.0
    for i, c in enumerate(hist):
        acc += c
        if acc >= target:
            return lat_bucket_mid(i)
    return lat_bucket_mid(len(hist) - 1)
