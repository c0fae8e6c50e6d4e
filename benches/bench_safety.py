"""Cost of the inline safety scan per KB of text, against a plain ``bytes.find`` pass in the same run.

Corpora: English-like prose, prose with planted PII/secrets/injection, source code, JSON
tool output, and non-ASCII prose. Each figure is the best of several rounds of
``find_spans`` (the detectors) and of ``scan_request`` (the whole request scan with a
redact policy), in µs per KB of UTF-8. Budget: 20 µs/KB.

Run alone: ``.venv/bin/python benches/bench_safety.py``; ``run()`` returns the markdown section.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tiergate.envelope import ChatRequest, Message, TextPart
from tiergate.safety import SafetyPolicy, find_spans, scan_request

BUDGET_US_PER_KB = 20.0
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


def measure() -> list[tuple[str, float, float, float, int]]:
    rows = []
    policy = SafetyPolicy(default="redact")
    for name, text in corpora().items():
        kb = len(text.encode()) / 1024
        raw = text.encode()
        chat = ChatRequest(model="auto", messages=[Message("user", [TextPart(text)])])
        base = _best_us(functools.partial(raw.find, b"\x00"))  # one C pass over the bytes
        spans = _best_us(functools.partial(find_spans, text))
        scan = _best_us(functools.partial(scan_request, chat, policy))
        rows.append((name, spans / kb, scan / kb, base / kb, len(find_spans(text))))
    return rows


def run() -> str:
    rows = measure()
    worst = max(r[2] for r in rows)
    lines = [
        "## Inline safety scan",
        "",
        f"µs per KB of UTF-8 text, best of 7 rounds; budget {BUDGET_US_PER_KB:g} µs/KB. "
        "`find_spans` is the detectors alone, `scan_request` the whole scan of a one-message request "
        "with a redact policy; the last column is one `bytes.find` pass over the same text (the floor).",
        "",
        "| corpus | find_spans µs/KB | scan_request µs/KB | × budget | bytes.find µs/KB | findings |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, spans, scan, base, n in rows:
        lines.append(
            f"| {name} | {spans:.1f} | {scan:.1f} | {scan / BUDGET_US_PER_KB:.2f} | {base:.2f} | {n} |"
        )
    verdict = "within" if worst <= BUDGET_US_PER_KB else "OVER"
    lines += ["", f"Worst corpus: {worst:.1f} µs/KB — {verdict} budget.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
