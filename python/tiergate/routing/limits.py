"""Per-deployment RPM/TPM budgets as token buckets.

A bucket refills continuously to its per-minute capacity. The planner treats a
deployment whose bucket is below ``headroom`` of capacity (or below what this request
needs) as unavailable, so traffic moves away before the provider starts answering 429.
"""

from __future__ import annotations

import time

from tiergate.config import DeploymentConfig

__all__ = ["Bucket", "Limits"]


class Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = float(per_minute)
        self.stamp = now

    def refill(self, now: float) -> float:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.level

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount  # may go negative: the debt is repaid before the next request


class Limits:
    __slots__ = ("_buckets", "_headroom", "_index", "limited")

    def __init__(
        self,
        deployments: dict[str, DeploymentConfig],
        index: dict[str, int],
        headroom: float,
        previous: Limits | None = None,
    ) -> None:
        now = time.monotonic()
        self._headroom = headroom
        self._index = index
        self._buckets: dict[str, tuple[Bucket | None, Bucket | None]] = {}
        for name, dep in deployments.items():
            rpm = Bucket(dep.limits.rpm, now) if dep.limits.rpm else None
            tpm = Bucket(dep.limits.tpm, now) if dep.limits.tpm else None
            old = previous._buckets.get(name) if previous is not None else None
            if old is not None:  # keep what was already spent when the limit is unchanged
                if rpm is not None and old[0] is not None and old[0].capacity == rpm.capacity:
                    rpm = old[0]
                if tpm is not None and old[1] is not None and old[1].capacity == tpm.capacity:
                    tpm = old[1]
            if rpm is not None or tpm is not None:
                self._buckets[name] = (rpm, tpm)
        # Whether any deployment has a limit: without one the planner asks nothing here.
        self.limited = bool(self._buckets)

    def near_limit_mask(self, tokens: int, now: float | None = None) -> int:
        """Bit i set when deployment i has too little budget left for this request."""
        if not self._buckets:
            return 0
        now = time.monotonic() if now is None else now
        mask = 0
        for name, (rpm, tpm) in self._buckets.items():
            if (rpm is not None and rpm.refill(now) < max(1.0, self._headroom * rpm.capacity)) or (
                tpm is not None
                and tpm.refill(now) < max(float(tokens), self._headroom * tpm.capacity)
            ):
                mask |= 1 << self._index[name]
        return mask

    def spend(self, name: str, tokens: int, now: float | None = None) -> None:
        """Count one request of about ``tokens`` tokens against the deployment's budgets."""
        buckets = self._buckets.get(name)
        if buckets is None:
            return
        now = time.monotonic() if now is None else now
        rpm, tpm = buckets
        if rpm is not None:
            rpm.take(1, now)
        if tpm is not None:
            tpm.take(tokens, now)
