"""LatencyWindow: the core's sketch against an exact sliding window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core_reference as ref
from tiergate import _core

ACC = _core.WINDOW_RELATIVE_ACCURACY
LO, HI = _core.WINDOW_MIN_VALUE_MS, _core.WINDOW_MAX_VALUE_MS
QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)

# 0.1 ms .. 10 min, log-uniform, plus the edges and out-of-range values.
VALUES = st.floats(math.log(0.1), math.log(600_000.0)).map(math.exp) | st.sampled_from(
    [0.0, 0.005, LO, 0.1, 600_000.0, HI, 1e9]
)
# Steps in seconds: bursts (0), small moves, gaps past the window, and time going back.
STEPS = st.sampled_from([0.0, 0.0, 0.001, 0.5, 3.0, 9.99, 10.0, 45.0, 299.0, 301.0, 5000.0, -7.0])


def close(est: float | None, exact: float | None) -> bool:
    if exact is None:
        return est is None
    assert est is not None
    if exact < LO:
        return est == 0.0
    if exact > HI:
        return abs(est - HI) <= HI * ACC
    return abs(est - exact) <= exact * ACC * (1 + 1e-9)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(STEPS, VALUES), max_size=300),
    st.sampled_from([(300.0, 30), (60.0, 6), (1.0, 1), (10.0, 100)]),
)
def test_matches_exact_window(ops: list[tuple[float, float]], shape: tuple[float, int]) -> None:
    core = _core.LatencyWindow(*shape)
    exact = ref.LatencyWindow(*shape)
    now = 1000.0
    for i, (step, value) in enumerate(ops):
        now += step
        core.record(value, now)
        exact.record(value, now)
        if i % 25 == 0:
            assert core.count(now) == exact.count(now)
    for later in (0.0, shape[0] / 2, shape[0] * 2):
        t = now + later
        assert core.count(t) == exact.count(t)
        for q in QS:
            assert close(core.quantile(q, t), exact.quantile(q, t)), (q, t)


def test_expiry_is_by_sub_window() -> None:
    w = _core.LatencyWindow(300.0, 30)
    w.record(5.0, now=0.0)
    assert w.count(now=299.999) == 1
    assert w.count(now=300.0) == 0
    assert w.quantile(0.5, now=300.0) is None


def test_time_going_backwards_is_clamped() -> None:
    w = _core.LatencyWindow(10.0, 10)
    w.record(1.0, now=100.0)
    w.record(2.0, now=50.0)  # taken as 100.0
    assert w.count(now=109.5) == 2
    assert w.count(now=110.0) == 0


def test_default_clock_is_monotonic() -> None:
    w = _core.LatencyWindow()
    w.record(12.0)
    assert w.count() == 1
    q = w.quantile(0.5)
    assert q is not None and abs(q - 12.0) <= 12.0 * ACC
    assert (w.window_s, w.buckets) == (300.0, 30)


def test_memory_is_bounded() -> None:
    w = _core.LatencyWindow(300.0, 30)
    for i in range(200_000):
        w.record(1.0 + (i % 1000), now=i * 0.001)
    assert w.count(now=200.0) == 200_000


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, -math.inf])
def test_bad_values(bad: float) -> None:
    w = _core.LatencyWindow()
    with pytest.raises(ValueError):
        w.record(bad, now=0.0)
    with pytest.raises(ValueError):
        w.record(1.0, now=bad if bad != -1.0 else math.nan)


@pytest.mark.parametrize("q", [-0.1, 1.1, math.nan])
def test_bad_quantiles(q: float) -> None:
    with pytest.raises(ValueError):
        _core.LatencyWindow().quantile(q, now=0.0)


def test_bad_shapes() -> None:
    for args in [(0.0, 30), (-1.0, 30), (math.nan, 30), (300.0, 0)]:
        with pytest.raises((ValueError, OverflowError)):
            _core.LatencyWindow(*args)
