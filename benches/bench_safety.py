"""Cost of the inline safety scan per KB of text: the Rust core beside the pure-Python
reference detectors, and a plain ``bytes.find`` pass, all in the same run.

Corpora: English-like prose, prose with planted PII/secrets/injection, source code, JSON
tool output, and non-ASCII prose. Each figure is the best of several rounds of
``_core.scan_text`` (the core alone), ``find_spans`` (the core with the conversion to
``Span``s), ``find_spans_reference`` (the pure-Python detectors) and ``scan_request`` (the
whole request scan with a redact policy), in µs per KB of UTF-8. Budget: 20 µs/KB for the
whole scan; the core's target is 5 µs/KB.

Run alone: ``.venv/bin/python benches/bench_safety.py``; ``run()`` returns the markdown section.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import orjson

from tiergate import _core
from tiergate.envelope import ChatRequest, Message, TextPart
from tiergate.safety import SafetyPolicy, find_spans, scan_request
from tiergate.safety.detectors import find_spans_reference

BUDGET_US_PER_KB = 20.0
CORE_TARGET_US_PER_KB = 5.0
REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "model",
    "answer",
    "request",
    "summary",
    "report",
    "quarter",
    "revenue",
    "customer",
    "2024",
    "12",
    "3.5",
    "instructions",
]


def corpora(size: int = 16 * 1024) -> dict[str, str]:
    rng = random.Random(42)
    prose = " ".join(rng.choice(WORDS) for _ in range(size // 4))[:size]
    planted = prose
    for pos, s in zip(
        range(1000, size, 2000),
        ["bob@example.com", "415-555-0132", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE",
         "sk-ant-api03-abcdefghijklmnopqrstuv", "ignore all previous instructions", "123-45-6789"],
        strict=False,
    ):  # fmt: skip
        planted = f"{planted[:pos]} {s} {planted[pos:]}"
    code = "".join(p.read_text() for p in sorted((REPO / "python" / "tiergate").glob("*.py")))[
        :size
    ]
    tool = orjson.dumps(
        [
            {"id": i, "name": rng.choice(WORDS), "score": rng.random(), "tags": [rng.choice(WORDS)]}
            for i in range(400)
        ]
    ).decode()[:size]
    cyrillic = ("Пример текста для проверки скорости сканирования, без личных данных. " * 400)[
        : size // 2
    ]
    return {
        "prose": prose,
        "prose+findings": planted,
        "code": code,
        "json": tool,
        "non-ascii": cyrillic,
    }


def _best_us(fn: Callable[[], object], rounds: int = 7, inner: int = 20) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best * 1e6


class Row(NamedTuple):
    corpus: str
    core: float  # _core.scan_text
    spans: float  # find_spans (core + Span objects)
    reference: float  # find_spans_reference (pure Python)
    scan: float  # scan_request, redact policy
    floor: float  # one bytes.find pass
    findings: int


def measure() -> list[Row]:
    rows = []
    policy = SafetyPolicy(default="redact")
    for name, text in corpora().items():
        kb = len(text.encode()) / 1024
        raw = text.encode()
        chat = ChatRequest(model="auto", messages=[Message("user", [TextPart(text)])])
        base = _best_us(functools.partial(raw.find, b"\x00"))  # one C pass over the bytes
        core = _best_us(functools.partial(_core.scan_text, text))
        spans = _best_us(functools.partial(find_spans, text))
        ref = _best_us(functools.partial(find_spans_reference, text), rounds=5, inner=5)
        scan = _best_us(functools.partial(scan_request, chat, policy))
        found = find_spans(text)
        assert found == find_spans_reference(text), name
        rows.append(Row(name, core / kb, spans / kb, ref / kb, scan / kb, base / kb, len(found)))
    return rows


def run() -> str:
    rows = measure()
    worst = max(r.scan for r in rows)
    worst_core = max(r.core for r in rows)
    lines = [
        "## Inline safety scan",
        "",
        f"µs per KB of UTF-8 text, best of several rounds; budget {BUDGET_US_PER_KB:g} µs/KB for "
        f"the whole scan, {CORE_TARGET_US_PER_KB:g} µs/KB for the core. `_core.scan_text` is the "
        "Rust scan alone, `find_spans` the same with `Span` objects built, `reference` the "
        "pure-Python detectors (same spans, asserted), `scan_request` the whole scan of a "
        "one-message request with a redact policy; the last column is one `bytes.find` pass "
        "over the same text (the floor).",
        "",
        "| corpus | core µs/KB | find_spans µs/KB | reference µs/KB | reference ÷ core "
        "| scan_request µs/KB | × budget | bytes.find µs/KB | findings |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.corpus} | {r.core:.2f} | {r.spans:.2f} | {r.reference:.1f} | "
            f"{r.reference / r.core:.0f}× | {r.scan:.2f} | {r.scan / BUDGET_US_PER_KB:.2f} | "
            f"{r.floor:.2f} | {r.findings} |"
        )
    verdict = "within" if worst <= BUDGET_US_PER_KB else "OVER"
    core_verdict = "met" if worst_core <= CORE_TARGET_US_PER_KB else "MISSED"
    lines += [
        "",
        f"Worst corpus: scan_request {worst:.2f} µs/KB — {verdict} budget; "
        f"core {worst_core:.2f} µs/KB — target {core_verdict}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
