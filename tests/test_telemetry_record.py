"""new_record, the server's cheap start of a RequestRecord, against the dataclass."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from tiergate.telemetry.record import AttemptRecord, RequestRecord, new_record


@given(st.text(max_size=12), st.integers(0, 2**63 - 1), st.sampled_from(["openai", "anthropic"]))
def test_new_record_is_the_dataclass_with_its_defaults(rid: str, start: int, surface: str) -> None:
    rec = new_record(rid, start, surface)
    ref = RequestRecord(rid, start, surface, "")
    assert rec == ref
    for f in dataclasses.fields(RequestRecord):  # set, each of them, and of the same type
        assert type(getattr(rec, f.name)) is type(getattr(ref, f.name)), f.name


def test_each_record_has_lists_of_its_own() -> None:
    a, b = new_record("a", 1, "openai"), new_record("b", 2, "openai")
    a.relaxed.append("x")
    a.attempts.append(AttemptRecord("d", "openai", "m", 0, 1.0))
    assert b.relaxed == [] and b.attempts == [] and b.safety == []
