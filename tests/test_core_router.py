"""Router.plan / explain: the core against the pure-Python reference (priors only),
plus windows replacing priors and surviving a reload."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core_reference as ref
from tiergate import _core

PRICE = st.sampled_from([0.0, 0.1, 0.15, 0.5, 1.0, 2.5, 5.0, 15.0])
CANDIDATE = st.tuples(
    st.integers(0, 3),  # tier
    PRICE,
    PRICE,
    PRICE,
    st.sampled_from([4_000, 16_000, 128_000]),
    st.integers(0, 15),  # capabilities
    st.sampled_from([100.0, 200.0, 350.0, 800.0]),
    st.sampled_from([5.0, 10.0, 20.0]),
    st.sampled_from([0.3, 0.5, 0.7, 0.9]),
)
LIMIT = st.sampled_from([0.0, -1.0, math.inf, 1.0, 500.0, 1500.0, 4000.0])
COST = st.sampled_from([0.0, math.inf, 1e-6, 1e-4, 1e-3, 0.01])


@st.composite
def cases(draw: Any) -> tuple[list[ref.Candidate], tuple[Any, ...], int, list[float] | None]:
    rows = draw(st.lists(CANDIDATE, min_size=1, max_size=16))
    table = [(f"c{i}", *row) for i, row in enumerate(rows)]
    n = len(table)
    args = (
        draw(st.integers(0, 15)),
        draw(st.integers(0, 20_000)),
        draw(st.integers(0, 4_000)),
        draw(st.integers(0, 2_000)),
        draw(LIMIT),
        draw(COST),
        draw(st.sampled_from([0.0, 0.5, 0.6, 0.8, 0.95])),
        draw(st.integers(0, 2**n - 1)) | draw(st.sampled_from([0, 2**n - 1])),
        draw(st.integers(0, 2**n - 1)) & draw(st.integers(0, 2**n - 1)),
    )
    flags = draw(st.sampled_from([0, _core.FLAG_ALLOW_QUALITY_RELAX]))
    qualities = draw(st.none() | st.lists(st.floats(0, 1), min_size=n, max_size=n))
    return table, args, flags, qualities


@settings(max_examples=200, deadline=None)
@given(cases())
def test_plan_and_explain_match_reference(case: Any) -> None:
    table, args, flags, qualities = case
    core = _core.Router(table)
    exact = ref.Router(table)
    kw = {"flags": flags, "qualities": qualities}
    assert core.plan(*args, **kw, now=0.0) == exact.plan(*args, **kw)
    assert core.explain(*args, **kw, now=0.0) == exact.explain(*args, **kw)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_plan_invariants(case: Any) -> None:
    table, args, flags, qualities = case
    order, relaxed = _core.Router(table).plan(*args, flags=flags, qualities=qualities, now=0.0)
    assert len(set(order)) == len(order)
    min_q = args[6]
    qs = qualities if qualities is not None else [c[9] for c in table]
    for i in order:
        assert args[7] >> i & 1 and not args[8] >> i & 1  # allowed and available
        assert table[i][6] & args[0] == args[0]  # capabilities
        assert table[i][5] >= args[1] + args[2]  # context
        if not relaxed & _core.RELAX_QUALITY and min_q > 0:
            assert qs[i] >= min_q
    if relaxed & _core.RELAX_QUALITY:
        assert flags & _core.FLAG_ALLOW_QUALITY_RELAX


TABLE = [
    ("small-a", 0, 0.15, 0.6, 0.015, 128_000, 9, 300.0, 10.0, 0.6),
    ("small-b", 0, 0.20, 0.8, 0.02, 128_000, 9, 200.0, 10.0, 0.62),
    ("mid", 1, 1.0, 4.0, 0.1, 128_000, 9, 400.0, 10.0, 0.8),
    ("large", 2, 5.0, 20.0, 0.5, 128_000, 15, 800.0, 10.0, 0.9),
]
ALL = 0b1111


def test_shape_and_constants() -> None:
    r = _core.Router(TABLE)
    assert len(r) == 4
    assert r.names == ("small-a", "small-b", "mid", "large")
    assert (_core.CAP_TOOLS, _core.CAP_JSON_SCHEMA, _core.CAP_VISION, _core.CAP_STREAMING) == (
        1,
        2,
        4,
        8,
    )
    assert (_core.RELAX_LATENCY, _core.RELAX_COST, _core.RELAX_QUALITY) == (1, 2, 4)
    assert r.plan(0, 1000, 500, 100, 0.0, 0.0, 0.0, ALL, 0) == ((0, 1, 2, 3), 0)
    assert r.plan(_core.CAP_VISION, 1000, 500, 100, 0.0, 0.0, 0.0, ALL, 0) == ((3,), 0)
    assert r.plan(0, 1000, 500, 100, 0.0, 0.0, 0.99, ALL, 0) == ((), 3)
    order, relaxed = r.plan(
        0, 1000, 500, 100, 0.0, 0.0, 0.99, ALL, 0, _core.FLAG_ALLOW_QUALITY_RELAX
    )
    assert relaxed == 7 and order == (0, 1, 2, 3)


def test_windows_replace_priors_and_survive_reload() -> None:
    r = _core.Router(TABLE, min_samples=20)
    assert r.predicted_latency(2, 100, now=0.0) == pytest.approx(1400.0)
    for _ in range(19):
        r.record(2, 50.0, 1.0, 200.0, now=1.0)
    assert r.predicted_latency(2, 100, now=1.0) == pytest.approx(1400.0)  # 19 < 20
    r.record(2, 50.0, 1.0, 200.0, now=1.0)
    assert r.predicted_latency(2, 100, now=1.0) == pytest.approx(150.0, rel=0.01)
    r.record(2, 50.0, math.nan, 200.0, now=1.0)  # unknown TPOT is skipped
    r2 = _core.Router(list(reversed(TABLE)), previous=r)
    assert r2.predicted_latency(1, 100, now=1.0) == pytest.approx(150.0, rel=0.01)
    r3 = _core.Router(TABLE, window_s=60.0, previous=r)  # other window: fresh
    assert r3.predicted_latency(2, 100, now=1.0) == pytest.approx(1400.0)
    assert r.predicted_latency(2, 100, now=400.0) == pytest.approx(1400.0)  # expired


def test_errors() -> None:
    with pytest.raises(ValueError, match="at most 64"):
        _core.Router([(f"c{i}", *TABLE[0][1:]) for i in range(65)])
    with pytest.raises(ValueError, match="duplicate"):
        _core.Router([TABLE[0], TABLE[0]])
    with pytest.raises(ValueError):
        _core.Router([("x", 0, -1.0, 0.0, 0.0, 1, 0, 1.0, 1.0, 1.0)])
    r = _core.Router(TABLE)
    with pytest.raises(IndexError):
        r.record(4, 1.0, 1.0, 1.0)
    with pytest.raises(IndexError):
        r.predicted_latency(9)
    with pytest.raises(ValueError):
        r.record(0, math.nan, 1.0, 1.0)
    with pytest.raises(ValueError, match="qualities"):
        r.plan(0, 1, 1, 1, 0.0, 0.0, 0.0, ALL, 0, qualities=[1.0])
    with pytest.raises(ValueError, match="NaN"):
        r.plan(0, 1, 1, 1, math.nan, 0.0, 0.0, ALL, 0)
    assert _core.Router([]).plan(0, 1, 1, 1, 0.0, 0.0, 0.0, 0, 0) == ((), 3)


SETTING = st.none() | st.sampled_from([0.0, 0.5, 0.9, 1.0, 500.0, 1e-4, math.inf])


@st.composite
def routed(draw: Any) -> tuple[Any, ...]:
    table, args, flags, qualities = draw(cases())
    n = len(table)
    every = 2**n - 1
    pinned = draw(st.none() | st.integers(0, n - 1))
    first = (1 << pinned) if pinned is not None else draw(st.sampled_from([every, 1, every >> 1]))
    scope = (
        "r",
        draw(st.integers(0, every)) | first,
        first or every,
        draw(SETTING),
        draw(SETTING),
        draw(SETTING),
        pinned,
    )
    answers = draw(st.lists(st.integers(0, 5_000), max_size=5))
    max_tokens = draw(st.none() | st.integers(1, 5_000))
    header = (draw(SETTING), draw(SETTING), draw(SETTING))
    tenant = (draw(SETTING), draw(SETTING), draw(SETTING))
    held = draw(st.integers(0, every))
    return table, args, flags, qualities, scope, answers, max_tokens, header, tenant, held


@settings(max_examples=200, deadline=None)
@given(routed())
def test_request_and_route_match_the_planners_python(case: Any) -> None:
    """Router.request / route against what Planner.features and Planner.plan computed in
    Python: settings resolved header > tenant > route, the route's output mean, the
    plan ordered by the route's scope and its pinned deployment."""
    table, args, flags, qualities, scope, answers, max_tokens, header, tenant, held = case
    n = len(table)
    core = _core.Router(table, routes=[scope], flags=flags)
    mean = ref.INITIAL_OUTPUT_TOKENS
    for out in answers:  # at t=0, so the windows are gone by t=1000 (priors again)
        core.observe("r", 0, None, 100.0, out, False, now=0.0)
        mean = ref.planner_mean(mean, out)
    assert core.output_mean(0) == mean
    expected = min(max_tokens, mean) if max_tokens else mean
    assert core.expected_output(0, max_tokens) == expected
    now = 1000.0
    for i in range(n):
        core.hold(i, now + 1 if held >> i & 1 else now)
    assert core.held_mask(now) == held
    caps, prompt, _, _, _, _, _, allowed, unavailable = args
    record = core.request(
        0, caps, prompt, max_tokens, header[0], tenant[0], header[1], tenant[1],
        header[2], tenant[2], allowed, unavailable, now=now,
    )  # fmt: skip
    want = ref.planner_request(
        scope, mean, caps, prompt, max_tokens, header, tenant, allowed, held | unavailable, flags
    )
    assert record.args() == want
    names, relaxed, planned = core.route(0, record, qualities, now=now)
    assert planned == record
    order, bits = ref.Router(table).plan(*want, flags=flags, qualities=qualities)
    pinned = scope[6]
    order = ref.planner_order(order, scope, n, pinned is not None and not held >> pinned & 1)
    assert names == [table[i][0] for i in order]
    labels = [
        (ref.RELAX_LATENCY, "latency"),
        (ref.RELAX_COST, "cost"),
        (ref.RELAX_QUALITY, "quality"),
    ]
    assert relaxed == [label for bit, label in labels if bits & bit]
    floor = core.route(0, record, qualities, 0.25, now=now)[2]
    assert floor.args() == (*want[:6], 0.25, *want[7:])
    if qualities is None:
        heuristic = core.route_heuristic(
            0, caps, prompt, max_tokens, header[0], tenant[0], header[1], tenant[1],
            header[2], tenant[2], allowed, unavailable, None, False, False, now=now,
        )  # fmt: skip
        assert heuristic[3] == record
        assert heuristic[2] == core.heuristic_qualities(prompt, None, False, False)


def test_routes_reject_bad_input_and_keep_means_over_a_reload() -> None:
    every = ALL
    with pytest.raises(ValueError, match="duplicate route"):
        _core.Router(TABLE, routes=[("a", every, every, None, None, None, None)] * 2)
    with pytest.raises(ValueError, match="beyond"):
        _core.Router(TABLE, routes=[("a", 0b10000, every, None, None, None, None)])
    with pytest.raises(IndexError):
        _core.Router(TABLE, routes=[("a", every, every, None, None, None, 4)])
    with pytest.raises(ValueError, match="NaN"):
        _core.Router(TABLE, routes=[("a", every, every, math.nan, None, None, None)])
    r = _core.Router(TABLE, routes=[("a", every, every, None, None, None, None)])
    with pytest.raises(IndexError):
        r.request(1, 0, 0, None, None, None, None, None, None, None, every)
    with pytest.raises(ValueError, match="unknown route"):
        r.observe("b", 0, None, 1.0, 1, False)
    with pytest.raises(IndexError):
        r.observe("a", 9, None, 1.0, 1, False)
    with pytest.raises(OverflowError):
        r.request(0, 0, 0, -1, None, None, None, None, None, None, every)
    with pytest.raises(ValueError, match="NaN"):
        r.hold(0, math.nan)
    r.observe("a", 0, 5.0, 100.0, 56, True)
    assert r.output_mean(0) == 246.0
    # a reload without the route carries its mean to one that has it again
    gone = _core.Router(TABLE, previous=r, routes=[("b", every, every, None, None, None, None)])
    back = _core.Router(TABLE, previous=gone, routes=[("a", every, every, None, None, None, None)])
    assert back.output_mean(0) == 246.0 and gone.output_mean(0) == 256.0
