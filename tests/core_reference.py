"""Pure-Python references of the Rust core (``tiergate._core``), written from the
documentation in ``rust/tiergate-core/src/*.rs`` and checked against it by the
``tests/test_core_*.py`` property tests. Slow and obvious on purpose."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import xxhash

# --------------------------------------------------------------------------- hash

TRANSPORT_FIELDS = (
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "timeout",
    "request_id",
    "idempotency_key",
    "prompt_cache_key",
    "safety_identifier",
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _float(text: str) -> float:
    f = float(text)
    if math.isinf(f):
        raise ValueError("number out of range")
    return f


def parse(body: bytes) -> Any:
    """json.loads restricted to what serde_json accepts (UTF-8, no NaN/Infinity)."""
    text = body.decode("utf-8")
    return json.loads(text, parse_constant=_reject_constant, parse_float=_float)


def _is_num(v: Any, target: float) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and float(v) == target


def canonicalise(obj: dict[str, Any]) -> dict[str, Any]:
    m = {k: v for k, v in obj.items() if v is not None and k not in TRANSPORT_FIELDS}
    if isinstance(m.get("stop"), str):
        m["stop"] = [m["stop"]]
    has_tools = isinstance(m.get("tools"), list) and len(m["tools"]) > 0

    def is_default(k: str, v: Any) -> bool:
        if k in ("temperature", "top_p", "n"):
            return _is_num(v, 1.0)
        if k in ("presence_penalty", "frequency_penalty"):
            return _is_num(v, 0.0)
        if k == "logprobs":
            return v is False
        if k == "parallel_tool_calls":
            return v is True
        if k == "response_format":
            return v == {"type": "text"} and isinstance(v, dict)
        if k in ("tools", "functions", "stop"):
            return v == [] and isinstance(v, list)
        if k == "logit_bias":
            return v == {} and isinstance(v, dict)
        if k == "tool_choice":
            return v == ("auto" if has_tools else "none")
        return False

    m = {k: v for k, v in m.items() if not is_default(k, v)}
    if isinstance(m.get("messages"), list):
        msgs = []
        for msg in m["messages"]:
            if isinstance(msg, dict):
                msg = {k: v for k, v in msg.items() if v is not None}
                c = msg.get("content")
                if (
                    isinstance(c, list)
                    and len(c) == 1
                    and isinstance(c[0], dict)
                    and len(c[0]) == 2
                    and c[0].get("type") == "text"
                    and isinstance(c[0].get("text"), str)
                ):
                    msg["content"] = c[0]["text"]
            msgs.append(msg)
        m["messages"] = msgs
    return m


def format_float(f: float) -> str:
    if f == int(f) and -(2**63) <= f < 2**63:
        return str(int(f))
    return f"0x{struct.unpack('>Q', struct.pack('>d', f))[0]:016x}"


def dump(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if -(2**63) <= v < 2**63:
            return str(v)
        return format_float(float(v))
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    assert isinstance(v, dict)
    items = sorted(v.items(), key=lambda kv: kv[0].encode())
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dump(x) for k, x in items) + "}"


def canonical_request(body: bytes) -> bytes:
    obj = parse(body)
    if not isinstance(obj, dict):
        raise ValueError("request body must be a JSON object")
    return dump(canonicalise(obj)).encode()


def request_key(body: bytes, tenant: str = "") -> bytes:
    t = tenant.encode()
    return xxhash.xxh3_128_digest(len(t).to_bytes(8, "little") + t + canonical_request(body))


# ------------------------------------------------------------------------- window


class LatencyWindow:
    """Exact: keeps every sample with its epoch; same time semantics as the core."""

    def __init__(self, window_s: float = 300.0, buckets: int = 30) -> None:
        self.width = window_s / buckets
        self.buckets = buckets
        self.samples: list[tuple[int, float]] = []
        self.last_now = -math.inf
        self.head: int | None = None

    def _epoch(self, now: float) -> int:
        now = max(now, self.last_now)
        self.last_now = now
        e = math.floor(now / self.width)
        return max(-(2**63), min(2**63 - 1, e))

    def _advance(self, now: float) -> int:
        e = self._epoch(now)
        self.head = e if self.head is None else max(self.head, e)
        h = self.head
        self.samples = [(k, v) for k, v in self.samples if k > h - self.buckets]
        return h

    def record(self, value_ms: float, now: float) -> None:
        h = self._advance(now)
        self.samples.append((h, value_ms))

    def in_window(self, now: float) -> list[float]:
        self._advance(now)
        return sorted(v for _, v in self.samples)

    def count(self, now: float) -> int:
        return len(self.in_window(now))

    def quantile(self, q: float, now: float) -> float | None:
        xs = self.in_window(now)
        if not xs:
            return None
        return xs[math.floor(q * (len(xs) - 1))]


# ------------------------------------------------------------------------- tokens

_WS = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
PUNCT_RANGES = (
    (0xA1, 0xBF),
    (0xD7, 0xD7),
    (0xF7, 0xF7),
    (0x2010, 0x2027),
    (0x2030, 0x205E),
    (0x2190, 0x2BFF),
    (0x3001, 0x303F),
    (0xFF01, 0xFF0F),
)
LETTER, DIGIT, SPACE, PUNCT = range(4)
SPACE_LOWER = [
    0,
    1000,
    1000,
    1000,
    1000,
    1000,
    1040,
    1050,
    1070,
    1110,
    1180,
    1100,
    1150,
    1450,
    1500,
    1900,
    2300,
]
NOSPACE_LOWER = [
    0,
    1000,
    1000,
    1040,
    1100,
    1250,
    1200,
    1700,
    2000,
    2000,
    2700,
    2900,
    3300,
    3700,
    4000,
    4300,
    4600,
]
OTHER_LOWER = [
    0,
    1000,
    1400,
    1250,
    1220,
    1280,
    1260,
    1700,
    1900,
    2000,
    2200,
    2400,
    2700,
    3000,
    3300,
    3600,
    3900,
]
SLOPE = 300
PUNCT_COST = [0, 1000, 1000, 1600, 2000, 2300, 3000]
IMAGE_TOKENS = 85


def char_class(c: str) -> int:
    o = ord(c)
    if o < 128:
        if "a" <= c <= "z" or "A" <= c <= "Z":
            return LETTER
        if "0" <= c <= "9":
            return DIGIT
        return SPACE if c in _WS else PUNCT
    if c in _WS:
        return SPACE
    if any(a <= o <= b for a, b in PUNCT_RANGES):
        return PUNCT
    return LETTER


def _is_upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _is_lower(c: str) -> bool:
    return "a" <= c <= "z"


def _seg(prefix: int, s: str) -> int:
    if len(s) >= 2 and all(_is_upper(c) for c in s):
        return 1000 + 450 * (len(s) - 2) + (600 if prefix == 2 else 0)
    table = SPACE_LOWER if prefix == 1 else OTHER_LOWER if prefix == 2 else NOSPACE_LOWER
    if len(s) < len(table):
        return table[len(s)]
    return table[16] + SLOPE * (len(s) - 16)


def _word(prefix: int, w: str) -> int:
    if w.isascii():
        total, start, p = 0, 0, prefix
        for i in range(1, len(w)):
            if _is_upper(w[i]) and _is_lower(w[i - 1]):
                total += _seg(p, w[start:i])
                p, start = 0, i
        return total + _seg(p, w[start:])
    c = 500 if prefix == 2 else 0
    for ch in w:
        n = len(ch.encode())
        c += {1: 250, 2: 1000, 3: 1200}.get(n, 2000)
    return max(c, 1000)


def _punct(body: str, newline: bool) -> int:
    a = sum(1 for ch in body if ch.isascii())
    na = len(body) - a
    c = PUNCT_COST[a] if a < len(PUNCT_COST) else 500 * a
    c += 1000 * na
    if newline and a >= 2:
        c += 100
    return c


def text_millitokens(s: str) -> int:
    n = len(s)
    cl = [char_class(c) for c in s]
    total = 0
    i = 0
    while i < n:
        c, k = s[i], cl[i]
        nxt = cl[i + 1] if i + 1 < n else None
        if c == "'" and i + 1 < n:
            two = s[i + 1 : i + 3]
            if len(two) == 2 and two.isascii() and two.lower() in ("ll", "ve", "re"):
                total += 1000
                i += 3
                continue
            if s[i + 1].isascii() and s[i + 1].lower() in ("s", "d", "m", "t"):
                total += 1000
                i += 2
                continue
        if k == LETTER or (k != DIGIT and c not in "\r\n" and nxt == LETTER):
            prefix = 0 if k == LETTER else (1 if c == " " else 2)
            start = i if k == LETTER else i + 1
            j = start
            while j < n and cl[j] == LETTER:
                j += 1
            total += _word(prefix, s[start:j])
            i = j
            continue
        if k == DIGIT:
            j = i + 1
            while j < n and j < i + 3 and cl[j] == DIGIT:
                j += 1
            total += 1000
            i = j
            continue
        if k == PUNCT or (c == " " and nxt == PUNCT):
            start = i if k == PUNCT else i + 1
            j = start
            while j < n and cl[j] == PUNCT:
                j += 1
            body_end = j
            while j < n and s[j] in "\r\n":
                j += 1
            total += _punct(s[start:body_end], j > body_end)
            i = j
            continue
        j = i
        last_nl = -1
        while j < n and cl[j] == SPACE:
            if s[j] in "\r\n":
                last_nl = j
            j += 1
        total += 1000
        if j == n:
            i = j
        elif last_nl >= 0:
            i = last_nl + 1
        elif j - i >= 2:
            i = j - 1
        else:
            i = j
    return total


def estimate_text_tokens(s: str) -> int:
    return (text_millitokens(s) + 500) // 1000


def _json_cost(v: Any) -> int:
    if isinstance(v, dict):
        return 1000 + sum(text_millitokens(k) + 1000 + _json_cost(x) for k, x in v.items())
    if isinstance(v, list):
        return 1000 + sum(_json_cost(x) for x in v)
    if isinstance(v, str):
        return text_millitokens(v) + 1000
    return 1000


def _str_cost(v: Any, key: str) -> int:
    if isinstance(v, dict) and isinstance(v.get(key), str):
        return text_millitokens(v[key])
    return 0


def _message(m: Any) -> int:
    t = 3000 + _str_cost(m, "role")
    if not isinstance(m, dict):
        return t
    c = m.get("content")
    if isinstance(c, str):
        t += text_millitokens(c)
    elif isinstance(c, list):
        for p in c:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                t += text_millitokens(p["text"])
            elif isinstance(p, dict) and p.get("type") == "image_url":
                t += IMAGE_TOKENS * 1000
    if isinstance(m.get("name"), str):
        t += 1000 + text_millitokens(m["name"])
    calls = m.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            t += 3000
            f = call.get("function") if isinstance(call, dict) else None
            if f is not None:
                t += _str_cost(f, "name") + _str_cost(f, "arguments")
    return t


def estimate_tokens(body: bytes) -> int:
    v = parse(body)
    if not isinstance(v, dict):
        raise ValueError("request body must be a JSON object")
    t = 3000
    if isinstance(v.get("messages"), list):
        t += sum(_message(m) for m in v["messages"])
    if isinstance(v.get("tools"), list):
        for tool in v["tools"]:
            t += 8000
            f = tool.get("function") if isinstance(tool, dict) else None
            if f is not None:
                t += _str_cost(f, "name") + _str_cost(f, "description")
                if isinstance(f, dict) and "parameters" in f:
                    t += _json_cost(f["parameters"])
    rf = v.get("response_format")
    if isinstance(rf, dict) and "json_schema" in rf:
        t += _json_cost(rf["json_schema"])
    return (t + 500) // 1000


# ------------------------------------------------------------------------- router

CAP_TOOLS, CAP_JSON_SCHEMA, CAP_VISION, CAP_STREAMING = 1, 2, 4, 8
RELAX_LATENCY, RELAX_COST, RELAX_QUALITY = 1, 2, 4
FLAG_ALLOW_QUALITY_RELAX = 1
V_CAPABILITY, V_CONTEXT, V_UNAVAILABLE, V_NOT_ALLOWED = 1, 2, 4, 8
V_LATENCY, V_COST, V_QUALITY = 16, 32, 64

Candidate = tuple[str, int, float, float, float, int, int, float, float, float]


class Router:
    """Priors only (no windows): the latency a fresh core router predicts."""

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self.c = list(candidates)

    def _rows(
        self, args: tuple[Any, ...], qualities: Sequence[float] | None
    ) -> list[tuple[int, int, float, float, float]]:
        (caps, prompt, max_out, exp_out, budget, ceiling, min_q, allowed, unavailable) = args[:9]
        rows = []
        for i, c in enumerate(self.c):
            _, _, p_in, p_out, _, ctx, ccaps, ttft, tpot, qp = c
            failed = 0
            if ccaps & caps != caps:
                failed |= V_CAPABILITY
            if ctx < prompt + max_out:
                failed |= V_CONTEXT
            if unavailable >> i & 1:
                failed |= V_UNAVAILABLE
            if not allowed >> i & 1:
                failed |= V_NOT_ALLOWED
            lat = ttft + exp_out * tpot
            cost = prompt * p_in / 1e6 + exp_out * p_out / 1e6
            q = qualities[i] if qualities is not None else qp
            if 0 < budget < math.inf and lat > budget:
                failed |= V_LATENCY
            if 0 < ceiling < math.inf and cost > ceiling:
                failed |= V_COST
            if min_q > 0 and q < min_q:
                failed |= V_QUALITY
            rows.append((i, failed, lat, cost, q))
        return rows

    def explain(
        self, *args: Any, flags: int = 0, qualities: Sequence[float] | None = None
    ) -> list[tuple[int, int, float, float, float]]:
        return self._rows(args, qualities)

    def plan(
        self, *args: Any, flags: int = 0, qualities: Sequence[float] | None = None
    ) -> tuple[tuple[int, ...], int]:
        rows = self._rows(args, qualities)
        hard = V_CAPABILITY | V_CONTEXT | V_UNAVAILABLE | V_NOT_ALLOWED
        steps = [
            (0, V_LATENCY | V_COST | V_QUALITY),
            (RELAX_LATENCY, V_COST | V_QUALITY),
            (RELAX_LATENCY | RELAX_COST, V_QUALITY),
        ]
        if flags & FLAG_ALLOW_QUALITY_RELAX:
            steps.append((RELAX_LATENCY | RELAX_COST | RELAX_QUALITY, 0))
        relaxed, primary = 0, []
        for bits, checked in steps:
            relaxed = bits
            primary = [r for r in rows if r[1] & (hard | checked) == 0]
            if primary:
                break
        if not primary:
            return (), relaxed

        def key(r: tuple[int, int, float, float, float]) -> tuple[float, float, int]:
            return (r[3], r[2], r[0])

        order = [r[0] for r in sorted(primary, key=key)]
        floor = 0 if relaxed & RELAX_QUALITY else V_QUALITY
        taken = set(order)
        pool = [r for r in rows if r[1] & (hard | floor) == 0 and r[0] not in taken]
        tier = self.c[order[0]][1]
        order += [r[0] for r in sorted((r for r in pool if self.c[r[0]][1] == tier), key=key)]
        for t in sorted({self.c[r[0]][1] for r in pool if self.c[r[0]][1] > tier}):
            order += [r[0] for r in sorted((r for r in pool if self.c[r[0]][1] == t), key=key)]
        return tuple(order), relaxed


# ------------------------------------------------------------------ planner's record
# What tiergate.routing.planner computed in Python before the core took it over
# (Router.request / route / observe).

INITIAL_OUTPUT_TOKENS = 256.0
OUTPUT_EWMA_ALPHA = 0.05

# (name, allowed, first, latency budget, cost ceiling, quality floor, pinned)
ScopeRow = tuple[str, int, int, float | None, float | None, float | None, int | None]


def planner_request(
    scope: ScopeRow,
    mean: float,
    caps: int,
    prompt_tokens: int,
    max_tokens: int | None,
    header: tuple[float | None, float | None, float | None],
    tenant: tuple[float | None, float | None, float | None],
    tenant_allowed: int,
    unavailable: int,
    flags: int,
) -> tuple[Any, ...]:
    """Planner.features: the record's fields in Router.plan's positional order."""
    expected = min(max_tokens, mean) if max_tokens else mean
    settings = []
    for own, theirs, route in zip(header, tenant, scope[3:6], strict=True):
        value = own
        if value is None:
            value = theirs
            if value is None:
                value = route
        settings.append(value)
    budget, ceiling, floor = settings
    return (
        caps,
        prompt_tokens,
        max_tokens or math.ceil(expected),
        math.ceil(expected),
        budget if budget is not None else math.inf,
        ceiling if ceiling is not None else math.inf,
        floor if floor is not None else 0.0,
        scope[1] & tenant_allowed,
        unavailable,
        flags,
    )


def planner_order(
    order: Sequence[int], scope: ScopeRow, candidates: int, pinned_available: bool
) -> list[int]:
    """Planner.plan: the route's own tier (or pinned deployment) first, then the rest;
    a pinned deployment left out leads when available."""
    first = scope[2]
    if first == (1 << candidates) - 1:
        plan = list(order)
    else:
        plan = [i for i in order if first >> i & 1] + [i for i in order if not first >> i & 1]
    pinned = scope[6]
    if pinned is not None and pinned not in plan and pinned_available:
        plan.insert(0, pinned)
    return plan


def planner_mean(mean: float, output_tokens: int) -> float:
    """Planner.observe's update of the route's mean."""
    return mean + OUTPUT_EWMA_ALPHA * (output_tokens - mean)
