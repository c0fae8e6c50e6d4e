"""``tiergate drift report``: compare each day with its trailing baseline, flag what moved.

DuckDB reads the hourly aggregates (``<path>/**/*.jsonl``, local or ``s3://``; when
DuckDB's httpfs extension is not available the S3 objects are fetched with aiobotocore
into a temporary directory and the same query runs there), sums them per deployment and
day, and each day is compared with the ``baseline_days`` before it:

========================  ===================================  ==========================
metric                    test                                 flagged when
========================  ===================================  ==========================
latency, ttft             PSI of the log-bucket histograms,    PSI ≥ 0.2, or p95 moved
                          p50/p95 shift                        by ≥ 50 %
predicted_quality         PSI of the 10-bucket histogram       PSI ≥ 0.2
error/fallback/refusal/   two-proportion z-test                |z| ≥ 4 and |Δ| ≥ 0.5 pt
schema_failure/shadow_
disagreement rate
cost_per_request          Welch z on the means                 |z| ≥ 4 and |Δ| ≥ 10 %
feedback_score            Welch z on the means                 |z| ≥ 4 and |Δ| ≥ 0.05
========================  ===================================  ==========================

Thresholds are deliberately strict (many metrics × days × deployments are tested at once).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from tiergate.drift.sink import split_s3
from tiergate.drift.sketch import LAT_BUCKETS, QUALITY_BUCKETS, quantile

__all__ = [
    "Flag",
    "Thresholds",
    "drift_main",
    "evaluate",
    "load_days",
    "parse_since",
    "prom_textfile",
    "render_table",
]

_SUMS = (
    "requests", "errors", "fallbacks", "refusals", "schema_failures", "input_tokens", "output_tokens",
    "cost_usd", "cost_sq", "quality_sum", "quality_n", "feedback_n", "feedback_sum", "feedback_sq",
    "shadow_n", "shadow_agree",
)  # fmt: skip
_HISTS = (
    ("latency_hist", LAT_BUCKETS),
    ("ttft_hist", LAT_BUCKETS),
    ("quality_hist", QUALITY_BUCKETS),
)


@dataclass(slots=True)
class Day:
    deployment: str
    day: date
    sums: dict[str, float]
    hists: dict[str, list[float]] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Thresholds:
    baseline_days: int = 7
    min_baseline_days: int = 3
    min_requests: int = 50
    psi: float = 0.2
    quantile_shift: float = 0.5
    z: float = 4.0
    rate_delta: float = 0.005
    cost_rel: float = 0.10
    feedback_delta: float = 0.05


@dataclass(slots=True, frozen=True)
class Flag:
    day: str
    deployment: str
    metric: str
    baseline: float
    value: float
    change: str
    statistic: str


def parse_since(text: str) -> timedelta:
    m = re.fullmatch(r"(\d+)([dh])", text.strip())
    if m is None:
        raise ValueError(f"--since must look like 14d or 36h; got {text!r}")
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)


def _glob(root: str) -> str:
    return root.rstrip("/") + "/**/*.jsonl"


def _fetch_s3(url: str, into: Path) -> None:
    """Download every .jsonl under an s3:// prefix (endpoint from AWS_ENDPOINT_URL if set)."""

    async def run() -> None:
        from aiobotocore.session import get_session

        bucket, prefix = split_s3(url)
        async with get_session().create_client(
            "s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        ) as s3:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if not key.endswith(".jsonl"):
                        continue
                    resp = await s3.get_object(Bucket=bucket, Key=key)
                    async with resp["Body"] as body:
                        data = await body.read()
                    dest = into / key
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data)

    asyncio.run(run())


def load_days(path: str, since_day: date | None = None) -> list[Day]:
    """Per deployment and UTC day: summed counters and element-wise summed histograms."""
    import duckdb

    con = duckdb.connect()
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        source = path
        if path.startswith("s3://"):
            try:
                con.execute("LOAD httpfs")
                con.execute("CREATE SECRET (TYPE s3, PROVIDER credential_chain)")
            except duckdb.Error:
                tmp = tempfile.TemporaryDirectory(prefix="tiergate-drift-")
                _fetch_s3(path, Path(tmp.name))
                source = tmp.name
        elif not Path(path).exists():
            raise FileNotFoundError(f"no aggregates at {path}")
        if (not path.startswith("s3://") or tmp is not None) and not any(
            Path(source).rglob("*.jsonl")
        ):
            return []
        cols = dict.fromkeys(_SUMS, "DOUBLE") | {"hour": "BIGINT", "deployment": "VARCHAR"}
        cols |= {h: "DOUBLE[]" for h, _ in _HISTS}
        spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
        glob = _glob(source).replace("'", "''")
        con.execute(
            f"CREATE TEMP TABLE agg AS SELECT *, hour // 86400 AS dayn "
            f"FROM read_json('{glob}', format='newline_delimited', hive_partitioning=false, columns={spec})"
        )
        since_n = (since_day - date(1970, 1, 1)).days if since_day else -(2**31)
        sums = ", ".join(f"sum({k})" for k in _SUMS)
        rows = con.execute(
            f"SELECT deployment, dayn, {sums} FROM agg WHERE dayn >= ? GROUP BY ALL ORDER BY ALL",
            [since_n],
        ).fetchall()
        days: dict[tuple[str, int], Day] = {}
        for dep, dayn, *vals in rows:
            days[(dep, dayn)] = Day(
                dep, date(1970, 1, 1) + timedelta(days=dayn), dict(zip(_SUMS, vals, strict=True))
            )
        for h, size in _HISTS:
            for d in days.values():
                d.hists[h] = [0.0] * size
            q = (
                f"SELECT deployment, dayn, i - 1 AS idx, sum(c) FROM "
                f"(SELECT deployment, dayn, unnest({h}) AS c, generate_subscripts({h}, 1) AS i FROM agg WHERE dayn >= ?) "
                f"GROUP BY ALL"
            )
            for dep, dayn, idx, c in con.execute(q, [since_n]).fetchall():
                hit = days.get((dep, dayn))
                if hit is not None and 0 <= idx < size:
                    hit.hists[h][idx] = c
        return sorted(days.values(), key=lambda d: (d.deployment, d.day))
    finally:
        con.close()
        if tmp is not None:
            tmp.cleanup()


def psi(actual: Sequence[float], expected: Sequence[float], eps: float = 1e-4) -> float:
    """Population stability index of two histograms over the same buckets."""
    ta, te = sum(actual), sum(expected)
    if ta <= 0 or te <= 0:
        return 0.0
    total = 0.0
    for a, e in zip(actual, expected, strict=True):
        pa = max(a / ta, eps)
        pe = max(e / te, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def _two_prop_z(x1: float, n1: float, x2: float, n2: float) -> float:
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0 if x1 / n1 == x2 / n2 else math.inf
    return (x1 / n1 - x2 / n2) / se


def _welch_z(
    s1: float, sq1: float, n1: float, s2: float, sq2: float, n2: float
) -> tuple[float, float, float]:
    m1, m2 = s1 / n1, s2 / n2
    v1 = max(sq1 / n1 - m1 * m1, 0.0)
    v2 = max(sq2 / n2 - m2 * m2, 0.0)
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0:
        return (0.0 if m1 == m2 else math.inf), m1, m2
    return (m1 - m2) / se, m1, m2


_RATES = (
    ("error_rate", "errors", "requests"),
    ("fallback_rate", "fallbacks", "requests"),
    ("refusal_rate", "refusals", "requests"),
    ("schema_failure_rate", "schema_failures", "requests"),
)


def _merge(days: Sequence[Day]) -> Day:
    base = Day(days[0].deployment, days[0].day, defaultdict(float))
    for d in days:
        for k, v in d.sums.items():
            base.sums[k] += v
        for h, vals in d.hists.items():
            acc = base.hists.setdefault(h, [0.0] * len(vals))
            for i, v in enumerate(vals):
                acc[i] += v
    return base


def _compare(day: Day, base: Day, t: Thresholds) -> list[Flag]:
    flags: list[Flag] = []
    ds = day.day.isoformat()
    dep = day.deployment

    def flag(metric: str, b: float, v: float, change: str, stat: str) -> None:
        flags.append(Flag(ds, dep, metric, round(b, 6), round(v, 6), change, stat))

    if day.sums["requests"] < t.min_requests:
        return flags
    for metric, h in (("latency", "latency_hist"), ("ttft", "ttft_hist")):
        a, e = day.hists.get(h), base.hists.get(h)
        if not a or not e or sum(a) < t.min_requests or sum(e) < t.min_requests:
            continue
        p = psi(a, e)
        q95a, q95e = quantile(a, 0.95), quantile(e, 0.95)
        assert q95a is not None and q95e is not None
        shift = q95a / q95e - 1
        if p >= t.psi or abs(shift) >= t.quantile_shift:
            flag(f"{metric}_p95_ms", q95e, q95a, f"{shift:+.0%}", f"PSI={p:.3f}")
    qa, qe = day.hists.get("quality_hist"), base.hists.get("quality_hist")
    if qa and qe and sum(qa) >= t.min_requests and sum(qe) >= t.min_requests:
        p = psi(qa, qe)
        if p >= t.psi:
            ma, me = (
                day.sums["quality_sum"] / day.sums["quality_n"],
                base.sums["quality_sum"] / base.sums["quality_n"],
            )
            flag("predicted_quality", me, ma, f"{ma - me:+.3f}", f"PSI={p:.3f}")
    rates = [*_RATES]
    if day.sums["shadow_n"] and base.sums["shadow_n"]:
        rates.append(("shadow_disagreement_rate", "shadow_disagree", "shadow_n"))
        for d in (day, base):
            d.sums["shadow_disagree"] = d.sums["shadow_n"] - d.sums["shadow_agree"]
    for metric, num, den in rates:
        n1, n2 = day.sums[den], base.sums[den]
        if n1 <= 0 or n2 <= 0:
            continue
        z = _two_prop_z(day.sums[num], n1, base.sums[num], n2)
        r1, r2 = day.sums[num] / n1, base.sums[num] / n2
        if abs(z) >= t.z and abs(r1 - r2) >= t.rate_delta:
            flag(metric, r2, r1, f"{(r1 - r2) * 100:+.2f} pt", f"z={z:.1f}")
    z, m1, m2 = _welch_z(
        day.sums["cost_usd"], day.sums["cost_sq"], day.sums["requests"],
        base.sums["cost_usd"], base.sums["cost_sq"], base.sums["requests"],
    )  # fmt: skip
    if m2 > 0 and abs(z) >= t.z and abs(m1 / m2 - 1) >= t.cost_rel:
        flag("cost_per_request_usd", m2, m1, f"{m1 / m2 - 1:+.0%}", f"z={z:.1f}")
    if day.sums["feedback_n"] >= 2 and base.sums["feedback_n"] >= 2:
        z, m1, m2 = _welch_z(
            day.sums["feedback_sum"], day.sums["feedback_sq"], day.sums["feedback_n"],
            base.sums["feedback_sum"], base.sums["feedback_sq"], base.sums["feedback_n"],
        )  # fmt: skip
        if abs(z) >= t.z and abs(m1 - m2) >= t.feedback_delta:
            flag("feedback_score", m2, m1, f"{m1 - m2:+.3f}", f"z={z:.1f}")
    return flags


def evaluate(
    days: Sequence[Day], report_from: date | None = None, t: Thresholds = Thresholds()
) -> list[Flag]:
    """Flags for every (deployment, day ≥ report_from) against its trailing baseline."""
    by_dep: dict[str, list[Day]] = defaultdict(list)
    for d in days:
        by_dep[d.deployment].append(d)
    flags: list[Flag] = []
    for series in by_dep.values():
        series.sort(key=lambda d: d.day)
        moved: set[date] = set()  # days that moved stay out of later baselines
        for i, day in enumerate(series):
            window = [
                d
                for d in series[:i]
                if (day.day - d.day).days <= t.baseline_days and d.day not in moved
            ]
            if len(window) < t.min_baseline_days:
                continue
            found = _compare(day, _merge(window), t)
            if found:
                moved.add(day.day)
            if report_from is None or day.day >= report_from:
                flags.extend(found)
    return flags


def render_table(flags: Sequence[Flag]) -> str:
    head = ("day", "deployment", "metric", "baseline", "value", "change", "statistic")
    rows = [head] + [
        (f.day, f.deployment, f.metric, f"{f.baseline:g}", f"{f.value:g}", f.change, f.statistic)
        for f in flags
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def prom_textfile(flags: Sequence[Flag], day: date) -> str:
    """``tiergate_drift_flagged`` for ``day``'s flags, in the textfile-collector format."""
    lines = [
        "# HELP tiergate_drift_flagged 1 when the daily drift report flagged this metric of this deployment.",
        "# TYPE tiergate_drift_flagged gauge",
    ]
    for f in flags:
        if f.day == day.isoformat():
            lines.append(
                f'tiergate_drift_flagged{{deployment="{f.deployment}",metric="{f.metric}"}} 1'
            )
    lines += [
        "# HELP tiergate_drift_report_day_seconds Start of the UTC day the drift report covered last.",
        "# TYPE tiergate_drift_report_day_seconds gauge",
        f"tiergate_drift_report_day_seconds {datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp():.0f}",
    ]
    return "\n".join(lines) + "\n"


def drift_main(
    path: str,
    since: str = "14d",
    as_json: bool = False,
    today: date | None = None,
    textfile: str | None = None,
) -> int:
    """Exit status: 0 nothing moved, 1 something did, 2 the aggregates could not be read."""
    try:
        window = parse_since(since)
    except ValueError as exc:
        print(f"tiergate drift report: {exc}", file=sys.stderr)
        return 2
    today = today or datetime.now(UTC).date()
    report_from = today - timedelta(days=max(window.days, 1) - 1)
    # Load the baseline of the first reported day too.
    thresholds = Thresholds()
    try:
        days = load_days(path, report_from - timedelta(days=thresholds.baseline_days))
    except (OSError, Exception) as exc:
        print(f"tiergate drift report: cannot read aggregates at {path}: {exc}", file=sys.stderr)
        return 2
    flags = evaluate(days, report_from, thresholds)
    if textfile is not None and days:
        latest = max(d.day for d in days)
        target = Path(textfile)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(prom_textfile(flags, latest), encoding="utf-8")
        tmp.replace(target)  # atomic, as the textfile collector expects
    if as_json:
        out = {
            "since": report_from.isoformat(),
            "deployments": sorted({d.deployment for d in days}),
            "days": len({d.day for d in days if d.day >= report_from}),
            "flags": [asdict(f) for f in flags],
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif flags:
        print(render_table(flags))
    else:
        n = len({d.day for d in days if d.day >= report_from})
        print(
            f"no drift: {len({d.deployment for d in days})} deployments over {n} days within bounds"
        )
    return 1 if flags else 0
