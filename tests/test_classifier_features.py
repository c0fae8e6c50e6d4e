"""The core's classifier features against a pure-Python reference, and the model file."""

from __future__ import annotations

import math
import re
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate import _core

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
FNV_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
WS = b" \t\n\x0c\r"
PUNCT = (
    bytes(range(0x21, 0x30))
    + bytes(range(0x3A, 0x41))
    + bytes(range(0x5B, 0x61))
    + bytes(range(0x7B, 0x7F))
)


def mix(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def word_hash(word: bytes, seed: int) -> int:
    h = FNV_BASIS ^ seed
    for b in word:
        h = ((h ^ b) * FNV_PRIME) & M64
    return mix(h)


def bucket(h: int, dim: int) -> int:
    return ((h >> 32) * dim) >> 32


def ref_sparse(text: str, cfg: dict[str, int]) -> dict[int, float]:
    low = text.encode().translate(
        bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
    )
    dim, seed = cfg["dim"], cfg["seed"]
    words: list[int] = []
    if cfg["word_ngrams"] > 0:
        toks = [t for t in _split(low) if t]
        prev = None
        for t in toks:
            h = word_hash(t, seed)
            words.append(h)
            if cfg["word_ngrams"] >= 2 and prev is not None:
                words.append(mix(((prev * GOLDEN) & M64) ^ h ^ seed ^ 1))
            prev = h
    chars: list[int] = []
    if cfg["char_max"] > 0:
        w = cfg["char_window"]
        tail = low if w == 0 or len(low) <= w else low[-w:]
        for n in range(cfg["char_min"], cfg["char_max"] + 1):
            s = mix(seed ^ (0x100 + n))
            for i in range(len(tail) - n + 1):
                g = int.from_bytes(tail[i : i + n], "little")
                chars.append(mix(g ^ s))
    out: dict[int, float] = {}
    for hs in (words, chars):
        if hs:
            v = 1 / math.sqrt(len(hs))
            for h in hs:
                i = bucket(h, dim)
                out[i] = out.get(i, 0.0) + v
    for j, v in enumerate(ref_structure(text)):
        if v != 0:
            out[dim + j] = v
    return out


def _split(b: bytes) -> list[bytes]:
    out, cur = [], bytearray()
    for c in b:
        if c in WS or c in PUNCT:
            if cur:
                out.append(bytes(cur))
                cur = bytearray()
        else:
            cur.append(c)
    if cur:
        out.append(bytes(cur))
    return out


def ref_structure(
    text: str, tools: int = 0, messages: int = 1, schema: bool = False
) -> list[float]:
    b = text.encode()
    chars = len(text)
    digits = sum(1 for c in b if 0x30 <= c <= 0x39)
    runs = len(re.findall(rb"[0-9]+", b))
    words = len(_split(b))
    upper = sum(1 for c in b if 0x41 <= c <= 0x5A)
    letters = upper + sum(1 for c in b if 0x61 <= c <= 0x7A)
    non_ascii = sum(1 for ch in text if ord(ch) >= 0x80)
    share = lambda a, n: 0.0 if n == 0 else a / n  # noqa: E731
    return [
        math.log1p(chars) / 8,
        math.log1p(words) / 7,
        1.0 if "```" in text else 0.0,
        math.log1p(runs) / 5,
        share(digits, chars),
        math.log1p(b.count(b"?")) / 3,
        math.log1p(b.count(b"\n")) / 6,
        share(non_ascii, chars),
        share(upper, letters),
        1.0 if schema else 0.0,
        math.log1p(tools) / 2,
        math.log1p(messages) / 3,
    ]


def core_rows(items: list[str | bytes], cfg: dict[str, int]) -> list[dict[int, float]]:
    idx, val, ptr = _core.features_batch(items, orjson.dumps(cfg).decode())
    ii = struct.unpack(f"<{len(idx) // 4}i", idx)
    vv = struct.unpack(f"<{len(val) // 4}f", val)
    pp = struct.unpack(f"<{len(ptr) // 8}q", ptr)
    return [
        dict(zip(ii[pp[r] : pp[r + 1]], vv[pp[r] : pp[r + 1]], strict=True))
        for r in range(len(items))
    ]


CONFIGS = st.fixed_dictionaries(
    {
        "dim": st.integers(1, 1 << 20),
        "seed": st.integers(0, M64),
        "word_ngrams": st.integers(0, 2),
        "char_min": st.integers(1, 4),
        "char_max": st.integers(4, 8),
        "char_window": st.sampled_from([0, 7, 64, 512]),
    }
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), cfg=CONFIGS)
def test_features_match_python_reference(text: str, cfg: dict[str, int]) -> None:
    (got,) = core_rows([text], cfg)
    want = ref_sparse(text, cfg)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@given(text=st.text(max_size=200))
def test_body_of_one_message_equals_its_text(text: str) -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
    assert _core.classifier_text(body) == text
    cfg = {"dim": 4096}
    assert core_rows([body], cfg) == core_rows([text], cfg)


def ref_body(body: object) -> tuple[str, int, int, bool]:
    """The classifier's document of a parsed body: (text, tools, messages, json_schema)."""
    pieces: list[str] = []
    messages = tools = 0
    msgs = body.get("messages") if isinstance(body, dict) else None
    if isinstance(msgs, list):
        for m in msgs:
            messages += 1
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                pieces.append(content)
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        pieces.append(text)
    tls = body.get("tools") if isinstance(body, dict) else None
    if isinstance(tls, list):
        for t in tls:
            tools += 1
            f = t.get("function", t) if isinstance(t, dict) else t
            name = f.get("name") if isinstance(f, dict) else None
            desc = f.get("description") if isinstance(f, dict) else None
            pieces.append(
                f"{name if isinstance(name, str) else ''} {desc if isinstance(desc, str) else ''}"
            )
    rf = body.get("response_format") if isinstance(body, dict) else None
    schema = isinstance(rf, dict) and rf.get("type") == "json_schema"
    return "\n".join(pieces), tools, messages, schema


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_KEYS = st.sampled_from(["content", "text", "name", "description", "function", "type", "role", "x"])
_ANY = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
)
_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.one_of(_ANY, st.lists(st.one_of(_ANY, st.fixed_dictionaries({"content": st.one_of(st.text(max_size=20), st.lists(st.one_of(_ANY, st.fixed_dictionaries({"text": st.one_of(st.text(max_size=10), _SCALARS)})), max_size=3), _ANY)})), max_size=4)),
        "tools": st.one_of(_ANY, st.lists(st.one_of(_ANY, st.fixed_dictionaries({"function": st.one_of(_ANY, st.dictionaries(_KEYS, st.one_of(st.text(max_size=6), _SCALARS), max_size=3))})), max_size=3)),
        "response_format": st.one_of(_ANY, st.fixed_dictionaries({"type": st.sampled_from(["json_schema", "text", 1])})),
        "model": st.text(max_size=5),
    },
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(body=_BODIES)
def test_body_document_matches_python_reference(body: dict[str, object]) -> None:
    raw = orjson.dumps(body)
    text, tools, messages, schema = ref_body(body)
    assert _core.classifier_text(raw) == text
    (row,) = core_rows([raw], {"dim": 16})
    want = ref_structure(text, tools=tools, messages=messages, schema=schema)
    for j, name in enumerate(_core.STRUCTURE_FEATURES):
        assert row.get(16 + j, 0.0) == pytest.approx(want[j], rel=1e-5, abs=1e-7), name


def test_body_structure_sees_tools_and_schema() -> None:
    body = orjson.dumps(
        {
            "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y?"}],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s"}},
        }
    )
    assert _core.classifier_text(body) == "x\ny?\nf d"
    (row,) = core_rows([body], {"dim": 16})
    names = _core.STRUCTURE_FEATURES
    want = ref_structure("x\ny?\nf d", tools=1, messages=2, schema=True)
    for j, name in enumerate(names):
        assert row.get(16 + j, 0.0) == pytest.approx(want[j], rel=1e-5), name
    with pytest.raises(ValueError):
        _core.features_batch([b"not json"], "{}")


def _model(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "format": "tiergate.quality_model",
        "version": 1,
        "features": {"dim": 32},
        "families": ["a", "b"],
        "intercepts": [0.0, 1.0],
        "weights": {"rows": [32], "values": [2.0, -1.0]},
        "calibration": {"method": "platt", "a": [1.0, 1.0], "b": [0.0, 0.0]},
        "operating_points": {"table": [{"floor": 0.9, "offset": 0.05}]},
    }
    doc.update(over)
    return doc


def test_model_predicts_and_applies_the_floor_rule() -> None:
    m = _core.QualityModel.from_json(orjson.dumps(_model()))
    assert m.families == ("a", "b") and len(m) == 2
    x = math.log1p(len("hi")) / 8  # log_chars, the only weighted feature
    p = m.predict("hi")
    assert p[0] == pytest.approx(1 / (1 + math.exp(-2 * x)), rel=1e-5)
    assert p[1] == pytest.approx(1 / (1 + math.exp(-(1 - x))), rel=1e-5)
    assert m.offset(0.95) == pytest.approx(0.05)
    assert m.min_quality(0.9, 0.8) == pytest.approx(0.9 * 0.8 - 0.05)
    assert m.min_quality(0.0, 0.8) == 0.0
    assert m.rule == "threshold" and m.cost_weight(0.9) == 0.0


def test_version_2_utility_rule() -> None:
    doc = _model(
        version=2,
        operating_points={
            "rule": "utility",
            "cost_usd": [0.001, 0.01],
            "table": [{"floor": 0.9, "lambda": 100.0}, {"floor": 0.95, "lambda": 10.0}],
        },
    )
    m = _core.QualityModel.from_json(orjson.dumps(doc))
    assert m.rule == "utility" and m.costs == [0.001, 0.01]
    assert m.operating_points == [(0.9, 100.0), (0.95, 10.0)]
    assert m.cost_weight(0.925) == pytest.approx(55.0)
    assert m.offset(0.9) == 0.0
    assert m.utility_choice(0.9, [0.7, 0.9], [0.001, 0.01]) == 0
    assert m.utility_choice(0.95, [0.7, 0.9], [0.001, 0.01]) == 1
    assert m.utility_choice(0.0, [0.7, 0.9], [0.001, 0.01]) == 0
    assert m.utility_choice(0.95, [], []) is None
    with pytest.raises(ValueError):
        m.utility_choice(0.95, [0.7], [0.001, 0.01])
    for bad, needle in [
        ({"rule": "utility", "table": []}, "cost_usd"),
        ({"cost_usd": [0.1, -1.0], "table": []}, "negative"),
        ({"cost_usd": [0.1, 0.1], "table": [{"floor": 0.9, "lambda": -1}]}, "lambda"),
    ]:
        with pytest.raises(ValueError, match=needle):
            _core.QualityModel.from_json(orjson.dumps(_model(version=2, operating_points=bad)))


def _v3(**over: object) -> dict[str, object]:
    doc = _model(
        version=3,
        operating_points={"rule": "utility", "cost_usd": [0.001, 0.01], "table": []},
        latent={
            "names": ["gate:x", "gate:y", "difficulty:x", "difficulty:y"],
            "intercepts": [0.0, 0.5, 0.1, -0.1],
            # row 32 (log_chars) and row 33 (log_words)
            "weights": {"rows": [32, 33], "values": [1.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]},
        },
        head={
            "gate": [0, 1],
            "inputs": [2, 3],
            "bias": [0.5, -0.5, 1.0, 0.0],
            "coef": [2.0, 0.0, 0.0, -1.0, 0.5, 0.0, 0.0, 3.0],
        },
    )
    del doc["intercepts"], doc["weights"]
    doc.update(over)
    return doc


def test_version_3_gated_head() -> None:
    m = _core.QualityModel.from_json(orjson.dumps(_v3()))
    assert m.rule == "utility" and len(m) == 2
    text = "two words"
    lc, lw = math.log1p(len(text)) / 8, math.log1p(2) / 7
    u = [lc, 0.5 - lc, 0.1 + 2 * lc, -0.1 + 3 * lw]
    assert m.latent(text) == pytest.approx(u, rel=1e-5)
    e0, e1 = math.exp(u[0]), math.exp(u[1])
    p0, p1 = e0 / (e0 + e1), e1 / (e0 + e1)
    z = [
        p0 * (0.5 + 2 * u[2]) + p1 * (-0.5 - u[3]),
        p0 * (1.0 + 0.5 * u[2]) + p1 * (3 * u[3]),
    ]
    assert m.logits(text) == pytest.approx(z, rel=1e-5)
    assert m.predict(text) == pytest.approx([1 / (1 + math.exp(-v)) for v in z], rel=1e-5)
    body = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    assert m.predict(body) == pytest.approx(m.predict(text))


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"latent": None}, "latent"),
        ({"head": {"gate": [0, 9], "inputs": [2], "bias": [0] * 4, "coef": [0] * 4}}, "head.gate"),
        ({"head": {"gate": [0, 1], "inputs": [2], "bias": [0] * 3, "coef": [0] * 4}}, "head.bias"),
        ({"head": {"gate": [], "inputs": [2], "bias": [0] * 2, "coef": [0] * 3}}, "head.coef"),
    ],
)
def test_version_3_errors_name_the_field(over: dict[str, object], needle: str) -> None:
    doc = _v3(**over)
    if doc.get("latent") is None:
        del doc["latent"]
    with pytest.raises(ValueError, match=needle):
        _core.QualityModel.from_json(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"version": 9}, "version"),
        ({"families": []}, "families"),
        ({"intercepts": [0.0]}, "intercepts"),
        ({"weights": {"rows": [99], "values": [1.0, 1.0]}}, "weights.rows"),
        ({"calibration": {"method": "isotonic"}}, "calibration"),
        ({"features": {"dim": 32, "structure": ["nope"]}}, "structure"),
    ],
)
def test_model_file_errors_name_the_field(over: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        _core.QualityModel.from_json(orjson.dumps(_model(**over)))
