"""A small deterministic JSON Schema instance generator.

Used for tool-call arguments and for ``json_schema`` output. Covers what models are
asked for in practice: ``type`` (also a list, and Gemini's upper-case names with
``nullable``), ``properties``/``required``, ``enum``/``const``, ``array``/``items``/
``prefixItems``/``minItems``/``maxItems``/``uniqueItems``, ``minLength``/``maxLength``,
string ``format`` (date-time, date, time, email, uri, uuid, ipv4, ipv6, hostname),
number bounds (``minimum``, ``maximum``, exclusive forms, ``multipleOf``),
``anyOf``/``oneOf``/``allOf`` and local ``$ref`` (``#/$defs/…``, ``#/definitions/…``).
``pattern`` is not honoured (a string of words is produced).
"""

from __future__ import annotations

import math
import random
from typing import Any

__all__ = ["instance"]

_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "fable", "grove", "harbor", "iris",
    "juniper", "kestrel", "lumen", "maple", "nectar", "onyx", "prairie", "quartz",
    "river", "sage", "tundra", "umber", "violet", "willow", "yarrow", "zephyr",
)  # fmt: skip

_MAX_DEPTH = 8


def instance(schema: Any, rng: random.Random) -> Any:
    """An instance valid for ``schema``; deterministic for a given ``rng`` state."""
    return _gen(schema, rng, schema, 0)


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _type_of(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        names = [str(x).lower() for x in t]
        non_null = [x for x in names if x != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(t, str):
        return t.lower()
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _gen(schema: Any, rng: random.Random, root: Any, depth: int) -> Any:
    if schema is True or schema is None or schema == {}:
        return rng.choice(_WORDS)
    if schema is False or not isinstance(schema, dict):
        return None
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#"):
        target = _resolve(schema["$ref"], root)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _gen({**target, **rest} if rest else target, rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    if "allOf" in schema:
        merged = _merge_all(schema, root)
        return _gen(merged, rng, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = list(schema[key])
            base = {k: v for k, v in schema.items() if k != key}
            pick = options[0] if key == "oneOf" else rng.choice(options)
            if isinstance(pick, dict) and "$ref" in pick:
                pick = _resolve(pick["$ref"], root)
            return _gen({**base, **pick} if isinstance(pick, dict) else pick, rng, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, root, depth)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _merge_all(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if isinstance(part, dict) and "$ref" in part:
            part = _resolve(part["$ref"], root)
        if not isinstance(part, dict):
            continue
        for k, v in part.items():
            if k == "properties":
                merged["properties"] = {**merged.get("properties", {}), **v}
            elif k == "required":
                merged["required"] = sorted({*merged.get("required", []), *v})
            else:
                merged.setdefault(k, v)
    return merged


def _object(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out: dict[str, Any] = {}
    for name, sub in props.items():
        if name in required or (depth < _MAX_DEPTH and rng.random() < 0.5):
            out[name] = _gen(sub, rng, root, depth + 1)
    for name in sorted(required - set(out)):
        out[name] = rng.choice(_WORDS)
    extra = schema.get("additionalProperties", True)
    want = int(schema.get("minProperties", 0))
    i = 0
    while len(out) < want and extra is not False:
        key = f"key{i}"
        if key not in out:
            out[key] = _gen(extra if isinstance(extra, dict) else {}, rng, root, depth + 1)
        i += 1
    return out


def _array(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> list[Any]:
    prefix = list(schema.get("prefixItems") or [])
    lo = int(schema.get("minItems", 0))
    hi = int(schema.get("maxItems", max(lo, len(prefix)) + 3))
    hi = max(lo, hi)
    n = lo if depth >= _MAX_DEPTH else rng.randint(lo, min(hi, max(lo, 1) + 2))
    items = schema.get("items", {})
    unique = bool(schema.get("uniqueItems"))
    out: list[Any] = []
    attempts = 0
    while len(out) < n and attempts < n * 20 + 20:
        attempts += 1
        i = len(out)
        sub = prefix[i] if i < len(prefix) else items
        value = _gen(sub, rng, root, depth + 1)
        if unique and value in out:
            continue
        out.append(value)
    return out


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    lo_x = hi_x = False
    ex_lo = schema.get("exclusiveMinimum")
    ex_hi = schema.get("exclusiveMaximum")
    if isinstance(ex_lo, bool):  # draft 4 form
        lo_x = ex_lo
    elif ex_lo is not None and (lo is None or ex_lo >= lo):
        lo, lo_x = ex_lo, True
    if isinstance(ex_hi, bool):
        hi_x = ex_hi
    elif ex_hi is not None and (hi is None or ex_hi <= hi):
        hi, hi_x = ex_hi, True
    return lo, hi, lo_x, hi_x


def _integer(schema: dict[str, Any], rng: random.Random) -> int:
    lo, hi, lo_x, hi_x = _bounds(schema)
    low: int | None = None
    high: int | None = None
    if lo is not None:
        low = math.floor(lo) + 1 if lo_x and lo == math.floor(lo) else math.ceil(lo)
    if hi is not None:
        high = math.ceil(hi) - 1 if hi_x and hi == math.ceil(hi) else math.floor(hi)
    if low is None:
        low = 0 if high is None else high - 100
    if high is None:
        high = low + 100
    high = max(low, high)
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0:
        first = math.ceil(low / step) * step
        count = max(0, (high - first) // step)
        return int(first + step * rng.randint(0, count))
    return rng.randint(low, high)


def _number(schema: dict[str, Any], rng: random.Random) -> float | int:
    step = schema.get("multipleOf")
    lo, hi, lo_x, hi_x = _bounds(schema)
    if step is not None and step > 0:
        low = math.ceil(lo / step) if lo is not None else 0
        if lo is not None and lo_x and low * step <= lo:
            low += 1
        high = math.floor(hi / step) if hi is not None else low + 100
        if hi is not None and hi_x and high * step >= hi:
            high -= 1
        k = rng.randint(low, max(low, high))
        value = k * step
        return int(value) if float(value).is_integer() else float(value)
    low_f = float(lo) if lo is not None else (float(hi) - 100.0 if hi is not None else 0.0)
    high_f = float(hi) if hi is not None else low_f + 100.0
    value = round(rng.uniform(low_f, high_f), 3)
    if (lo is not None and (value < lo or (lo_x and value <= lo))) or (
        hi is not None and (value > hi or (hi_x and value >= hi))
    ):
        value = (low_f + high_f) / 2
    return value


_FORMATS = {
    "date-time": lambda r: f"2024-0{r.randint(1, 9)}-1{r.randint(0, 9)}T1{r.randint(0, 9)}:30:00Z",
    "date": lambda r: f"2024-0{r.randint(1, 9)}-1{r.randint(0, 9)}",
    "time": lambda r: f"1{r.randint(0, 9)}:30:00Z",
    "email": lambda r: f"{r.choice(_WORDS)}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "url": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-8{r.getrandbits(12):03x}-{r.getrandbits(48):012x}"
    ),
    "ipv4": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "ipv6": lambda r: f"2001:db8::{r.randint(1, 65535):x}",
    "hostname": lambda r: f"{r.choice(_WORDS)}.example.com",
}


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return str(_FORMATS[fmt](rng))
    lo = int(schema.get("minLength", 0))
    hi = int(schema.get("maxLength", max(lo, 24)))
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
    while len(text) < lo:
        text += " " + rng.choice(_WORDS)
    return text[: max(lo, hi)]
