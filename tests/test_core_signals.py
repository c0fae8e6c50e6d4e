"""`_core.text_signals` and the heuristic quality against the Python wording they replaced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tiergate import _core

_CODE = ("```", "def ", "function ")
_HARD = ("prove", "step by step", "derive", "optimi", "analy")


def reference(text: str) -> int:
    bits = _core.SIG_CODE if any(c in text for c in _CODE) else 0
    lowered = text.lower()
    if any(w in lowered for w in _HARD):
        bits |= _core.SIG_HARD
    return bits


# Text built from pieces of the markers (so matches and near-misses are common), any
# letters, and non-ASCII characters. U+0130 is left out: Python lowers it to "i" plus a
# combining dot, the core lowers ASCII only (documented). Lone surrogates (no UTF-8 form)
# are left out here and tested below.
_pieces = st.sampled_from(
    ["```", "``", "def", "def ", "DEF ", "function", " ", "pro", "ve", "PROVE", "step by",
     " step", "Derive", "OPTIMI", "analy", "ANALY", "é", "ü", "\n", "x"]
)  # fmt: skip
_text = st.lists(
    st.one_of(
        _pieces,
        st.text(
            st.characters(blacklist_characters="\u0130", blacklist_categories=("Cs",)), max_size=5
        ),
    ),
    max_size=30,
).map("".join)


@given(_text)
def test_matches_the_python_wording(text: str) -> None:
    assert _core.text_signals(text) == reference(text)


def test_bits() -> None:
    assert _core.text_signals("Please prove this step by step") == _core.SIG_HARD
    assert _core.text_signals("```python\ndef f(): pass\n```") == _core.SIG_CODE
    assert _core.text_signals("hello") == 0


def test_lone_surrogates_are_read_as_replacement_characters() -> None:
    assert _core.text_signals("prove it \ud800") == _core.SIG_HARD
    assert _core.text_signals("def f(): \udfff") == _core.SIG_CODE
    assert _core.text_signals("\ud800") == 0


def reference_qualities(
    priors: list[float], prompt_tokens: int, text: str | None, tools: bool, json_schema: bool
) -> list[float]:
    """The planner's Python heuristic the core replaced (HeuristicQuality.difficulty and
    predict): same additions in the same order, so the floats are equal, not close."""
    d = min(prompt_tokens / 8000.0, 0.4)
    signals = reference(text) if text is not None else 0
    if signals & _core.SIG_CODE:
        d += 0.2
    if tools:
        d += 0.1
    if json_schema:
        d += 0.1
    if signals & _core.SIG_HARD:
        d += 0.2
    exponent = 1.0 + min(d, 1.0)
    return [p**exponent for p in priors]


_priors = st.lists(st.floats(0, 1), min_size=1, max_size=6)


def _router(priors: list[float]) -> _core.Router:
    rows = [(f"d{i}", 0, 1.0, 1.0, 1.0, 100_000, 0, 100.0, 10.0, p) for i, p in enumerate(priors)]
    every = (1 << len(priors)) - 1
    return _core.Router(rows, routes=[("auto", every, every, None, None, None, None)])


@given(_priors, st.integers(0, 10**7), st.none() | _text, st.booleans(), st.booleans())
def test_heuristic_qualities_match_the_python_heuristic(
    priors: list[float], tokens: int, text: str | None, tools: bool, schema: bool
) -> None:
    router = _router(priors)
    expected = reference_qualities(priors, tokens, text, tools, schema)
    assert router.heuristic_qualities(tokens, text, tools, schema) == expected
    every = (1 << len(priors)) - 1
    names, relaxed, qualities, request = router.route_heuristic(
        0, 0, tokens, 16, None, None, None, None, None, None, every, 0, text, tools, schema
    )
    assert qualities == expected
    order, bits = router.plan(*request.args(), qualities=expected)
    assert names == [router.names[i] for i in order]
    labels = [(_core.RELAX_LATENCY, "latency"), (_core.RELAX_COST, "cost")]
    assert relaxed == [label for bit, label in labels if bits & bit]
