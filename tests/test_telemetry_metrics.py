"""The metrics' remembered cells (one lookup per kind of request) count what the
per-observation path counts: the same series, the same values."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_helpers import config, record
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
    attempt: AttemptRecord | None,
) -> RequestRecord:
    if attempt is not None:
        extra = {**extra, "attempts": [attempt]}
    return record(
        f"req-{i}", route=route, deployment=deployment, status=status, fallback=fallback, **extra
    )


records = st.builds(
    _record,
    st.integers(0, 10**6),
    st.sampled_from(["chat", "nope"]),
    st.sampled_from(["small", "large", "gone", None]),
    st.sampled_from([200, 400, 429, 502]),
    st.booleans(),
    st.fixed_dictionaries(
        {},
        optional={
            "tenant": st.sampled_from(["", "acme", "stranger"]),
            "idempotency": st.sampled_from(["none", "miss", "coalesced", "replay"]),
            "ttft_ms": st.none() | st.floats(0, 1e5),
            "input_tokens": st.integers(0, 10**7),
            "output_tokens": st.integers(0, 10**7),
            "cost_usd": st.sampled_from([0.0, 1e-6, 0.5]),
            "decision_us": st.sampled_from([0.0, 12.5, 1e6]),
            "stream_error": st.none() | st.just("stalled"),
            "error_type": st.none() | st.just("rate_limited"),
            "response_model": st.none() | st.sampled_from(["m1", "m2"]),
            "provider": st.none() | st.just("openai"),
            "operation": st.sampled_from(["chat", "messages"]),
        },
    ),
    st.none()
    | st.builds(
        lambda dep, err, hedge, cancelled: AttemptRecord(
            dep, "openai", "m", 0, 1.0, error_class=err, hedge=hedge, cancelled=cancelled
        ),
        st.sampled_from(["small", "gone"]),
        st.none() | st.just("timeout"),
        st.booleans(),
        st.booleans(),
    ),
)


def _values(m: Metrics) -> dict[str, Any]:
    return {
        name: dict(inst._values)
        for name, inst in vars(m).items()
        if hasattr(inst, "_values") and not name.startswith("_")
    }


@settings(max_examples=150, deadline=None)
@given(st.lists(records, max_size=12))
def test_remembered_cells_count_as_each_observation_does(batch: list[Any]) -> None:
    fast, each = Metrics(_CONFIG), Metrics(_CONFIG)
    each._otel = True  # the path taken when OTel instruments are attached
    for rec in batch:
        fast.observe_request(rec)
        each.observe_request(rec)
    assert _values(fast) == _values(each)
    assert fast.exposition() == each.exposition()
