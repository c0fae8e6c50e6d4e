"""The request log lines the core writes from the records are byte for byte the lines
orjson writes for record_line's dict (the reference)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_helpers import record
from tiergate.telemetry.logline import record_line, record_lines
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

attempts = st.builds(
    AttemptRecord,
    st.text(max_size=8),
    st.text(max_size=8),
    st.text(max_size=8),
    st.integers(0, 2**63),
    st.floats(0, 1e6),
    status=st.none() | st.integers(100, 599),
    error_class=st.none() | st.text(max_size=8),
    hedge=st.booleans(),
    cancelled=st.booleans(),
    ttft_ms=st.none() | st.floats(0, 1e6),
    input_tokens=st.integers(0, 10**7),
    output_tokens=st.integers(0, 10**7),
    cost_usd=st.floats(0, 10),
    finish_reason=st.none() | st.text(max_size=8),
)


# A float field may hold an int (``sum`` of no costs is 0), and any float: orjson writes
# NaN and infinities as null.
any_float = st.floats() | st.integers(-(2**62), 2**64 - 1)  # attempt ms = latency_ms - 110

requests = st.fixed_dictionaries(
    {"start_ns": st.integers(-(2**63), 2**63 - 1)},
    optional={
        "tenant": st.text(max_size=8),
        "stream": st.booleans(),
        "stream_error": st.none() | st.text(max_size=12),
        "error_type": st.none() | st.text(max_size=8),
        "ttft_ms": st.none() | any_float,
        "latency_ms": any_float,
        "cost_usd": any_float,
        "decision_us": any_float,
        "predicted_quality": st.none() | st.floats(0, 1),
        "predicted_latency_ms": st.none() | any_float,
        "relaxed": st.lists(st.sampled_from(["latency", "cost", "quality"]), max_size=3),
        "safety": st.lists(
            st.builds(SafetyFinding, st.text(max_size=6), st.just("input"), st.text(max_size=6)),
            max_size=2,
        ),
        "attempts": st.lists(attempts, max_size=3),
        "idempotency": st.sampled_from(["none", "miss", "coalesced", "replay"]),
        "response_model": st.none() | st.text(max_size=10),
        "status": st.integers(-(2**63), 2**64 - 1),
        "fallbacks": st.integers(0, 3),
        "input_tokens": st.integers(0, 2**64 - 1),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(requests, max_size=4))
def test_record_lines_are_the_reference_lines(batch: list[dict[str, Any]]) -> None:
    recs = [record('req-\u2028"x', **fields) for fields in batch]
    assert record_lines(recs) == b"".join(
        orjson.dumps(record_line(rec), option=orjson.OPT_APPEND_NEWLINE) for rec in recs
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", 2**64),
        ("fallbacks", -(2**63) - 1),
        ("decision_us", "slow"),  # a str is a JSON scalar too: written, not refused
        ("cost_usd", [0.1]),
        ("tenant", {"name": "acme"}),
        ("start_ns", 2**63),
        ("start_ns", 1.5),
        ("attempts", (AttemptRecord("a", "b", "c", 0, 1.0),)),
        # A kind is a str (its type); the reference would have formatted anything.
        ("safety", [SafetyFinding(1, "input", "log")]),  # type: ignore[arg-type]
        ("request_id", "lone \ud800 surrogate"),
    ],
)
def test_what_orjson_refuses_is_refused_with_the_field_named(field: str, value: Any) -> None:
    rec = record(**{"start_ns": 0, field: value})
    good = record()
    if field == "decision_us":
        assert record_lines([rec]) == orjson.dumps(record_line(rec)) + b"\n"
        return
    with pytest.raises((TypeError, ValueError)) as err:
        record_lines([good, rec])
    if not isinstance(err.value, UnicodeError):
        assert field in str(err.value)


# The core reads a record's fields straight from its slots when the object is exactly a
# RequestRecord (or AttemptRecord) whose class is unchanged; anything else is read with
# getattr. Each case below must give the line attribute access gives.


def _reference(recs: list[Any]) -> bytes:
    return b"".join(
        orjson.dumps(record_line(rec), option=orjson.OPT_APPEND_NEWLINE) for rec in recs
    )


def test_a_subclass_overriding_a_field_is_read_as_attribute_access_reads_it() -> None:
    slot: Any = RequestRecord.__dict__["tenant"]  # the base's member descriptor

    class Renamed(RequestRecord):
        __slots__ = ()

        @property
        def tenant(self) -> str:
            return "from-the-property"

        @tenant.setter
        def tenant(self, value: str) -> None:  # the slot holds it; reads see the property
            slot.__set__(self, value)

    plain, sub = record("req-1"), Renamed("req-2", 0, "openai", "chat")
    batch = [plain, sub, plain]  # the same call site sees both types, in turn
    assert record_lines(batch) == _reference(batch)
    assert b'"tenant":"from-the-property"' in record_lines([sub])


def test_a_class_changed_after_its_layout_was_taken_is_read_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = record("req-1", tenant="acme")
    assert b'"tenant":"acme"' in record_lines([rec])  # the layout is now known
    with monkeypatch.context() as m:
        m.setattr(RequestRecord, "tenant", property(lambda self: "patched"), raising=True)
        assert b'"tenant":"patched"' in record_lines([rec])
        assert record_lines([rec]) == _reference([rec])
    assert b'"tenant":"acme"' in record_lines([rec])  # the slot again, once restored


def test_an_unset_slot_raises_as_getattr_does() -> None:
    rec = record("req-1")
    record_lines([rec])
    empty = RequestRecord.__new__(RequestRecord)  # no field set
    with pytest.raises(AttributeError):
        record_lines([empty])
    bare_attempt = AttemptRecord.__new__(AttemptRecord)
    rec.attempts = [bare_attempt]
    with pytest.raises(AttributeError):
        record_lines([rec])


def test_any_object_with_the_fields_is_read_by_getattr() -> None:
    from types import SimpleNamespace

    real = record("req-1", tenant="acme")
    fields = {name: getattr(real, name) for name in RequestRecord.__slots__}
    fields["attempts"] = [
        SimpleNamespace(**{n: getattr(a, n) for n in AttemptRecord.__slots__})
        for a in real.attempts
    ]
    duck: Any = SimpleNamespace(**fields)
    assert record_lines([real, duck, real]) == _reference([real, real, real])


def test_a_slot_changed_between_calls_is_read_anew() -> None:
    rec = record("req-1", tenant="acme")
    first = record_lines([rec])
    rec.tenant = "globex"
    rec.attempts[0].deployment = "elsewhere"
    second = record_lines([rec])
    assert first != second
    assert second == _reference([rec])
