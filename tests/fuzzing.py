"""Near-valid JSON documents for fuzzing: a valid document with a few of its values
replaced (by any JSON), removed, or joined by new keys. Mutations of valid requests and
answers reach the code behind the first checks, where random documents never get."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import strategies as st

from tiergate.errors import RequestError

__all__ = ["mutated", "parser_reading", "spelled", "values"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)  # past 64 bits too: valid JSON
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "user", "assistant", "tool", "system", "auto", "text", "function"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    """One of ``bases`` with up to three values replaced or removed, or keys added."""
    doc: dict[str, Any] = orjson.loads(orjson.dumps(draw(st.sampled_from(bases))))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(doc)[1:]  # never the document itself
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(values)
    return doc


def _escaped(c: str) -> str:
    """``c`` as a JSON ``\\u`` escape: a surrogate pair beyond the Basic Multilingual Plane."""
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def spelled(
    draw: st.DrawFn,
    value: Any,
    decoys: st.SearchStrategy[Any],
    decoyed: tuple[str, ...] | None = None,
) -> str:
    """``value`` as JSON spelled as a client might: members in any order, some preceded by
    a decoy of the same key (a value of ``decoys``; the last one counts) when the key is
    one of ``decoyed`` (None: any key), whitespace here and there, and key characters
    escaped as ``\\u`` sequences."""
    space = draw(st.sampled_from(["", " ", "\n  "]))
    if isinstance(value, dict):
        items = list(value.items())
        order = draw(st.permutations(range(len(items))))
        members = []
        for i in order:
            key, item = items[i]
            if draw(st.booleans()) and (decoyed is None or key in decoyed):
                members.append(f"{json.dumps(key)}:{space}{json.dumps(draw(decoys))}")
            if draw(st.booleans()):
                name = '"' + "".join(map(_escaped, key)) + '"'
            else:
                name = json.dumps(key)
            members.append(f"{name}{space}:{space}{spelled(draw, item, decoys, decoyed)}")
        return "{" + space + f",{space}".join(members) + space + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(spelled(draw, v, decoys, decoyed) for v in value) + "]"
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


def parser_reading(parse: Callable[[Any, bytes], Any], raw: bytes) -> Any:
    """What a surface's parser (``parse_openai_request``, ``parse_anthropic_request``)
    makes of the body ``raw``, the oracle of the core readers' differential tests: the
    request, ``("refused", message, param)``, or ``("not json",)``."""
    try:
        return parse(orjson.loads(raw), raw)
    except RequestError as exc:
        return ("refused", exc.message, exc.param)
    except orjson.JSONDecodeError:
        return ("not json",)
