"""The request log line written from a list of values and the core's JsonShape is
byte for byte the line orjson writes for record_line's dict (the reference)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry_helpers import record
from tiergate import _core
from tiergate.telemetry.logline import record_json, record_line
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

Shape = list[Any]


def named(shape: Shape, values: list[Any]) -> dict[str, Any]:
    """Reference of JsonShape.write: the dict naming ``values`` after ``shape``."""
    assert len(shape) == len(values)
    out: dict[str, Any] = {}
    for field, value in zip(shape, values, strict=True):
        if isinstance(field, str):
            out[field] = value
        elif field[1] == "object":
            out[field[0]] = named(field[2], value)
        else:
            out[field[0]] = [named(field[2], v) for v in value]
    return out


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def shapes(draw: st.DrawFn, depth: int = 0) -> Shape:
    shape: Shape = []
    for name in draw(st.lists(st.text(max_size=8), unique=True, max_size=5)):
        kind = draw(st.sampled_from(["value", "object", "objects"] if depth < 2 else ["value"]))
        shape.append(name if kind == "value" else (name, kind, draw(shapes(depth + 1))))
    return shape


@st.composite
def values_for(draw: st.DrawFn, shape: Shape) -> list[Any]:
    values: list[Any] = []
    for field in shape:
        if isinstance(field, str):
            values.append(draw(json_values))
        elif field[1] == "object":
            values.append(draw(values_for(field[2])))
        else:
            values.append(draw(st.lists(values_for(field[2]), max_size=3)))
    return values


@settings(max_examples=300, deadline=None)
@given(shapes().flatmap(lambda shape: st.tuples(st.just(shape), values_for(shape))))
def test_shape_writes_what_orjson_writes_for_the_named_dict(case: tuple[Shape, list[Any]]) -> None:
    shape, values = case
    assert _core.JsonShape(shape).write(orjson.dumps(values)) == orjson.dumps(named(shape, values))


def test_shape_refuses_arrays_that_do_not_match() -> None:
    shape = _core.JsonShape(["a", ("b", "objects", ["x"])])
    assert shape.write(b'[1,[[2],["3"]]]') == b'{"a":1,"b":[{"x":2},{"x":"3"}]}'
    for bad in (b"[1]", b"[1,[[2]],3]", b"[1,[2]]", b"[1,[[2,3]]]", b"{}", b"[1,[[2]]"):
        with pytest.raises(ValueError):
            shape.write(bad)
    with pytest.raises(TypeError):
        _core.JsonShape([("a", "map", [])])  # type: ignore[list-item]


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


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tenant": st.text(max_size=8),
            "stream": st.booleans(),
            "stream_error": st.none() | st.text(max_size=12),
            "error_type": st.none() | st.text(max_size=8),
            "ttft_ms": st.none() | st.floats(0, 1e6),
            "latency_ms": st.floats(0, 1e6),
            "predicted_quality": st.none() | st.floats(0, 1),
            "predicted_latency_ms": st.none() | st.floats(0, 1e6),
            "relaxed": st.lists(st.sampled_from(["latency", "cost", "quality"]), max_size=3),
            "safety": st.lists(
                st.builds(
                    SafetyFinding, st.text(max_size=6), st.just("input"), st.text(max_size=6)
                ),
                max_size=2,
            ),
            "attempts": st.lists(attempts, max_size=3),
            "idempotency": st.sampled_from(["none", "miss", "coalesced", "replay"]),
            "response_model": st.none() | st.text(max_size=10),
            "start_ns": st.integers(0, 2**63 - 1),
        },
    )
)
def test_record_json_is_the_reference_line(fields: dict[str, Any]) -> None:
    rec: RequestRecord = record('req-\u2028"x', **fields)
    assert record_json(rec) == orjson.dumps(record_line(rec))
