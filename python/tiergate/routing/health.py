"""Passive health: outlier ejection and rate-limit cool-downs, per deployment.

Ejection works as Envoy's outlier detection: ``consecutive_failures`` in a row, or a
failure ratio over ``failure_ratio`` within ``window_s`` (once ``min_requests`` were
seen), ejects a deployment for ``base_ejection_s × 2^(n-1)`` (n = how many times it was
ejected in a row, capped at ``max_ejection_s``). At most ``max_ejected_share`` of a
tier is ejected at once (one always may, as in Envoy), so a fleet-wide problem degrades rather than empties a tier.
A cool-down is separate: a 429 with Retry-After (or provider rate-limit headers) makes
the deployment unavailable until then; nothing is sent to it before.

Only failures that say something about the deployment count: server errors, overload,
timeouts, connect errors and invalid output. A caller's error, a context-length error or
a rate limit (a cool-down instead) do not.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic as _monotonic

from tiergate.config import EjectionConfig
from tiergate.errors import ErrorClass

__all__ = ["Health"]

_COUNTS_AGAINST = frozenset(
    {
        ErrorClass.SERVER_ERROR,
        ErrorClass.OVERLOADED,
        ErrorClass.TIMEOUT,
        ErrorClass.CONNECT,
        ErrorClass.INVALID_OUTPUT,
    }
)
# A 429 without Retry-After cools the deployment down this long.
DEFAULT_COOLDOWN_S = 1.0
# The failure ratio counts attempts in this many buckets of ``window_s / BUCKETS``
# seconds (the last ``window_s`` to within one bucket): a deployment's window is at most
# this many counters whatever its traffic. One entry per attempt kept ``window_s × rate``
# of them (90k at 3k requests a second over 30 s) and a failure summed them all.
BUCKETS = 30


@dataclass(slots=True)
class _State:
    tier: str
    consecutive: int = 0
    # [bucket number, attempts, failures], oldest first; bucket numbers are floats
    # (``now // width``: no int() per answer).
    buckets: deque[list[float]] = field(default_factory=deque)
    ejected_until: float = 0.0
    ejections_in_a_row: int = 0
    cooldown_until: float = 0.0


class Health:
    __slots__ = (
        "_config",
        "_hold",
        "_index",
        "_states",
        "_tier_size",
        "_until",
        "_width",
        "events",
    )

    def __init__(
        self,
        config: EjectionConfig,
        tiers: dict[str, str],
        index: dict[str, int],
        previous: Health | None = None,
        hold: Callable[[int, float], None] | None = None,
    ) -> None:
        """``tiers``: deployment → tier; ``index``: deployment → router index; ``hold``
        (the core router's ``hold``) is told each deployment's end of ejection or
        cool-down whenever it moves, so the router leaves it out of plans without the
        planner asking here per request."""
        self._config = config
        self._index = index
        self._hold = hold
        self._width = config.window_s / BUCKETS
        self._states: dict[str, _State] = {}
        for name, tier in tiers.items():
            old = previous._states.get(name) if previous is not None else None
            if old is not None and old.tier == tier:
                if previous is not None and previous._width != self._width:
                    old.buckets.clear()  # its buckets count in another width
                self._states[name] = old
            else:
                self._states[name] = _State(tier)
        self._tier_size: dict[str, int] = {}
        for tier in tiers.values():
            self._tier_size[tier] = self._tier_size.get(tier, 0) + 1
        # The latest ejection or cool-down end of any deployment: before it nothing is
        # unavailable, and the planner asks on every request.
        self._until = max(
            (max(s.ejected_until, s.cooldown_until) for s in self._states.values()), default=0.0
        )
        for name, s in self._states.items():
            self._held(name, s)
        # (kind, deployment, seconds) of ejections and cool-downs, drained by telemetry.
        self.events: deque[tuple[str, str, float]] = deque(maxlen=1024)

    def available(self, name: str, now: float | None = None) -> bool:
        if now is None:
            now = _monotonic()
        if self._until <= now:  # nothing is ejected or cooling down: the usual case
            return True
        s = self._states[name]
        return s.ejected_until <= now and s.cooldown_until <= now

    def unavailable_mask(self, now: float | None = None) -> int:
        """Bit i set when the deployment at router index i is ejected or cooling down."""
        now = time.monotonic() if now is None else now
        if self._until <= now:
            return 0
        mask = 0
        for name, s in self._states.items():
            if s.ejected_until > now or s.cooldown_until > now:
                mask |= 1 << self._index[name]
        return mask

    def unavailable(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [n for n in self._states if not self.available(n, now)]

    def success(self, name: str, now: float | None = None) -> None:
        if now is None:
            now = _monotonic()
        s = self._states[name]
        s.consecutive = 0
        if s.ejections_in_a_row and s.ejected_until <= now:
            s.ejections_in_a_row = 0
        # Every answer counts here: the bucket it lands in is usually the newest one,
        # counted without _remember's frame (a new bucket goes through it).
        buckets = s.buckets
        if buckets and buckets[-1][0] == now // self._width:
            buckets[-1][1] += 1
        else:
            self._remember(s, now, failed=False)

    def failure(
        self,
        name: str,
        error_class: ErrorClass,
        retry_after_s: float | None,
        now: float | None = None,
    ) -> None:
        now = time.monotonic() if now is None else now
        s = self._states[name]
        if error_class is ErrorClass.RATE_LIMITED:
            wait = retry_after_s if retry_after_s is not None else DEFAULT_COOLDOWN_S
            self.cool_down(name, wait, now)
            return
        if retry_after_s is not None and error_class is ErrorClass.OVERLOADED:
            self.cool_down(name, retry_after_s, now)
        if error_class not in _COUNTS_AGAINST:
            return
        s.consecutive += 1
        self._remember(s, now, failed=True)
        if s.ejected_until > now:
            return
        c = self._config
        seen: float = 0  # counts, in cells typed with their float bucket number
        failed: float = 0
        for _, attempts, failures in s.buckets:  # at most BUCKETS, and only on a failure
            seen += attempts
            failed += failures
        ratio_tripped = seen >= c.min_requests and failed / seen >= c.failure_ratio
        if s.consecutive >= c.consecutive_failures or ratio_tripped:
            self._eject(name, s, now)

    def cool_down(self, name: str, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        s = self._states[name]
        until = now + max(0.0, seconds)
        if until > s.cooldown_until:
            s.cooldown_until = until
            self._until = max(self._until, until)
            self._held(name, s)
            self.events.append(("cooldown", name, seconds))

    def _eject(self, name: str, s: _State, now: float) -> None:
        c = self._config
        ejected = sum(
            1 for o in self._states.values() if o.tier == s.tier and o.ejected_until > now
        )
        if ejected >= max(1, int(c.max_ejected_share * self._tier_size[s.tier])):
            return  # the cap keeps part of the tier serving (one may always go, as in Envoy)
        s.ejections_in_a_row += 1
        seconds = min(c.base_ejection_s * 2 ** (s.ejections_in_a_row - 1), c.max_ejection_s)
        s.ejected_until = now + seconds
        self._until = max(self._until, s.ejected_until)
        self._held(name, s)
        s.consecutive = 0
        s.buckets.clear()
        self.events.append(("ejection", name, seconds))

    def _held(self, name: str, s: _State) -> None:
        if self._hold is not None:
            self._hold(self._index[name], max(s.ejected_until, s.cooldown_until))

    def _remember(self, s: _State, now: float, failed: bool) -> None:
        bucket = now // self._width
        buckets = s.buckets
        if buckets and buckets[-1][0] == bucket:
            cell = buckets[-1]
        else:  # a new bucket: the ones it pushes out of the window leave
            while buckets and buckets[0][0] <= bucket - BUCKETS:
                buckets.popleft()
            cell = [bucket, 0, 0]
            buckets.append(cell)
        cell[1] += 1
        if failed:
            cell[2] += 1
