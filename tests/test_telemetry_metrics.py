"""The core's request tally (the path without OTel) counts what the per-observation path
(taken when OTel instruments are attached) counts: the same series, the same values,
the same /metrics text, scraped at any point."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from telemetry_helpers import config, record
from tiergate.telemetry.logline import record_lines
from tiergate.telemetry.metrics import Metrics
from tiergate.telemetry.record import AttemptRecord, RequestRecord

_CONFIG = config()


def _record(
    i: int,
    route: str,
    deployment: str | None,
    status: int,
    fallback: bool,
    extra: dict[str, Any],
    attempts: list[AttemptRecord],
) -> RequestRecord:
    rec = record(
        f"req-{i}",
        route=route,
        deployment=deployment,
        status=status,
        fallback=fallback,
        start_ns=0,
        **extra,
    )
    rec.attempts.extend(attempts)
    return rec


# Non-negative: the OTel SDK warns of (and drops) negative values.
finite = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
records = st.builds(
    _record,
    st.integers(0, 10**6),
    st.sampled_from(["chat", "nope", ""]),
    st.sampled_from(["small", "large", "gone", "", None]),
    st.sampled_from([200, 302, 400, 429, 499, 502, 600]),
    st.booleans(),
    st.fixed_dictionaries(
        {},
        optional={
            "tenant": st.sampled_from(["", "acme", "stranger"]),
            "idempotency": st.sampled_from(["none", "miss", "coalesced", "replay"]),
            "latency_ms": finite,
            "ttft_ms": st.none() | finite,
            "input_tokens": st.integers(0, 2**62),
            "output_tokens": st.integers(0, 10**7),
            "cost_usd": st.sampled_from([0, 0.0, 1e-6, 0.1, 0.5]) | finite,
            "decision_us": st.sampled_from([0.0, 12.5, 1e6]) | finite,
            "fallbacks": st.integers(0, 3),
            "stream_error": st.sampled_from([None, "", "stalled"]),
            "error_type": st.sampled_from([None, "", "rate_limited"]),
            "response_model": st.sampled_from([None, "", "m1", "m2"]),
            "provider": st.sampled_from([None, "", "openai"]),
            "operation": st.sampled_from(["chat", "messages"]),
        },
    ),
    st.lists(
        st.builds(
            lambda dep, err, hedge, cancelled: AttemptRecord(
                dep, "openai", "m", 0, 1.0, error_class=err, hedge=hedge, cancelled=cancelled
            ),
            st.sampled_from(["small", "gone", ""]),
            st.sampled_from([None, "", "timeout"]),
            st.booleans(),
            st.booleans(),
        ),
        max_size=3,
    ),
)


def _values(m: Metrics) -> dict[str, list[tuple[tuple[str, ...], list[Any]]]]:
    """Every instrument's cells, in their order (the order /metrics lists them in)."""
    m.drain()
    return {
        name: list(inst._values.items())
        for name, inst in vars(m).items()
        if hasattr(inst, "_values") and not name.startswith("_")
    }


def _with_otel() -> Metrics:
    reader = InMemoryMetricReader()
    return Metrics(_CONFIG, MeterProvider(metric_readers=[reader]).get_meter("test"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(records, max_size=5), max_size=4))
def test_the_tally_counts_as_each_observation_does(batches: list[list[RequestRecord]]) -> None:
    tally, each = Metrics(_CONFIG), _with_otel()
    for batch in batches:  # a scrape after each batch: the tally's cells come in each time
        tally.observe_requests(batch)
        for rec in batch:
            each.observe_requests([rec])
        assert _values(tally) == _values(each)
        assert tally.exposition() == each.exposition()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(records, max_size=5), max_size=3))
def test_log_lines_count_what_they_write(batches: list[list[RequestRecord]]) -> None:
    both, counted = Metrics(_CONFIG), Metrics(_CONFIG)
    for batch in batches:  # the hub's one call per batch when it logs and tallies
        assert both.log_lines(batch) == record_lines(batch)
        counted.observe_requests(batch)
        assert _values(both) == _values(counted)
    assert not _with_otel().tallies


def test_a_record_that_cannot_be_read_is_refused_whole() -> None:
    m = Metrics(_CONFIG)
    bad = record("req-2", status="200")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status"):
        m.observe_requests([record("req-1"), bad])
    with pytest.raises(TypeError, match="status"):
        m.log_lines([record("req-1"), bad])
    assert _values(m)["requests"] == []
    m.observe_requests([record("req-1")])
    assert _values(m)["requests"] == [(("chat", "small", "ok"), [1.0])]


def test_series_past_the_cache_keep_their_cells() -> None:
    m = Metrics(_CONFIG)
    # Tenants outside the config are one label ("other") but thousands of series.
    m.observe_requests([record(f"r{i}", tenant=f"t{i}") for i in range(5000)])
    m.observe_requests([record("again", tenant="t0")])
    values = dict(_values(m)["cost"])
    assert list(values) == [("chat", "small", "other")]
    assert values[("chat", "small", "other")] == [pytest.approx(5001 * 0.000036)]
    assert dict(_values(m)["requests"]) == {("chat", "small", "ok"): [5001.0]}
