"""`_core.text_signals` against the Python wording of the heuristic it replaced."""

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
