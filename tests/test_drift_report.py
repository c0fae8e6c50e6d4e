"""Drift: aggregates from records through the real aggregator and sink, then the DuckDB report."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemetry_helpers import record
from tiergate.cli import main
from tiergate.drift.aggregate import DriftAggregator, _served_by, hour_of
from tiergate.drift.report import evaluate, load_days, psi
from tiergate.drift.sink import LocalSink, S3Sink
from tiergate.drift.sketch import lat_bucket, lat_bucket_mid, quantile
from tiergate.telemetry.record import SafetyFinding

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=13 - i) for i in range(14)]
SHIFT_DAY = DAYS[10]
PER_HOUR = 12  # requests per deployment per hour → 288 a day


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def synthesize(
    sink: LocalSink | S3Sink,
    shift: str | None,
    seed: int = 7,
    hours: int = 24,
    per_hour: int = PER_HOUR,
) -> None:
    """Fourteen days, two deployments; `shift` moves one metric of `small` on SHIFT_DAY."""
    rng = random.Random(seed)
    clock = Clock()
    agg = DriftAggregator(sink, clock=clock, instance="pod-a")
    n = 0
    for day in DAYS:
        for hour in range(hours):
            start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()
            clock.now = start + 3599
            batch = []
            for dep in ("small", "large"):
                shifted = dep == "small" and day == SHIFT_DAY
                for _ in range(per_hour):
                    n += 1
                    latency = rng.lognormvariate(math.log(400 if dep == "small" else 900), 0.3)
                    if shifted and shift == "latency":
                        latency *= 1.8
                    refusal_p = 0.12 if shifted and shift == "refusal" else 0.02
                    cost = rng.uniform(0.0008, 0.0012) * (
                        1.5 if shifted and shift == "cost" else 1.0
                    )
                    safety = (
                        [SafetyFinding("refusal", "output", "log")]
                        if rng.random() < refusal_p
                        else []
                    )
                    batch.append(
                        record(
                            f"r{n}", deployment=dep, latency_ms=latency, ttft_ms=latency / 4, cost_usd=cost,
                            start_ns=int((start + rng.uniform(0, 3500)) * 1e9), safety=safety,
                            predicted_quality=rng.betavariate(8, 2), fallback=rng.random() < 0.05,
                        )
                    )  # fmt: skip
            await agg.write(batch)
            await agg.flush()
    await agg.close()


@pytest.fixture
def agg_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "drift"


async def test_stable_fortnight_flags_nothing(
    agg_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await synthesize(LocalSink(agg_dir), None)
    files = list(agg_dir.rglob("*.jsonl"))  # noqa: ASYNC240
    assert len(files) == 14 * 24
    assert files[0].relative_to(agg_dir).parts[0].startswith("date=")
    assert main(["drift", "report", "--aggregates", str(agg_dir)]) == 0
    assert "no drift" in capsys.readouterr().out
    days = load_days(str(agg_dir))
    assert len(days) == 28 and all(d.sums["requests"] == 24 * PER_HOUR for d in days)


@pytest.mark.parametrize(
    ("shift", "metric"),
    [("latency", "latency_p95_ms"), ("refusal", "refusal_rate"), ("cost", "cost_per_request_usd")],
)
async def test_injected_shift_flags_that_day_and_metric(
    agg_dir: Path, shift: str, metric: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await synthesize(LocalSink(agg_dir), shift)
    assert main(["drift", "report", "--aggregates", str(agg_dir), "--json"]) == 1
    out = orjson.loads(capsys.readouterr().out)
    flagged = {(f["day"], f["deployment"], f["metric"]) for f in out["flags"]}
    # The latency shift also moves TTFT (it is a quarter of latency here).
    expected = {(SHIFT_DAY.isoformat(), "small", metric)}
    if shift == "latency":
        expected.add((SHIFT_DAY.isoformat(), "small", "ttft_p95_ms"))
    assert flagged == expected
    assert main(["drift", "report", "--aggregates", str(agg_dir)]) == 1
    table = capsys.readouterr().out
    assert metric in table and SHIFT_DAY.isoformat() in table


async def test_report_since_window_and_bad_input(
    agg_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await synthesize(LocalSink(agg_dir), "cost")
    # The shift was three days ago; a two-day window does not report it.
    assert main(["drift", "report", "--aggregates", str(agg_dir), "--since", "2d"]) == 0
    assert main(["drift", "report", "--aggregates", str(agg_dir), "--since", "fortnight"]) == 2
    assert main(["drift", "report", "--aggregates", str(agg_dir / "missing")]) == 2
    assert "--since" in capsys.readouterr().err


async def test_late_feedback_and_shadow_rows_add_up(agg_dir: Path) -> None:
    clock = Clock()
    day = date(2026, 3, 1)
    t0 = datetime(day.year, day.month, day.day, 10, tzinfo=UTC).timestamp()
    clock.now = t0 + 10
    agg = DriftAggregator(LocalSink(agg_dir), clock=clock, feedback_capacity=2, instance="pod-b")
    for i in range(3):
        rec = record(f"q{i}", start_ns=int((t0 + i) * 1e9))
        agg.remember(rec)
        await agg.write([rec])
    await agg.flush()
    clock.now = t0 + 5 * 3600  # hour 10 is now closed and evicted
    await agg.flush()
    assert agg.add_feedback("q0", 1.0) is False  # forgotten: capacity 2
    assert agg.add_feedback("q2", 0.5) is True  # goes to a late file
    agg.add_shadow("small", int(t0), agreed=False)
    await agg.close()
    names = sorted(p.name for p in agg_dir.rglob("*.jsonl"))  # noqa: ASYNC240
    assert names == ["pod-b-late-1.jsonl", "pod-b.jsonl"]
    (d,) = load_days(str(agg_dir))
    assert d.sums["requests"] == 3 and d.sums["feedback_n"] == 1 and d.sums["feedback_sum"] == 0.5
    assert d.sums["shadow_n"] == 1 and d.sums["shadow_agree"] == 0


async def test_s3_sink_and_report_over_s3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiobotocore.session import get_session
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}.items():  # fmt: skip
            monkeypatch.setenv(k, v)
        async with get_session().create_client("s3", region_name="us-east-1") as s3:
            await s3.create_bucket(Bucket="tg-drift")
        sink = S3Sink("s3://tg-drift/prod/aggregates", "us-east-1", url)
        await synthesize(sink, "refusal", hours=2, per_hour=12 * PER_HOUR)  # fewer, larger objects
        async with get_session().create_client("s3", region_name="us-east-1") as s3:
            listed = await s3.list_objects_v2(Bucket="tg-drift", Prefix="prod/aggregates/date=")
            assert listed["KeyCount"] > 0
        code = await _run_in_thread(
            ["drift", "report", "--aggregates", "s3://tg-drift/prod/aggregates", "--json"]
        )
        assert code == 1
        flags = orjson.loads(capsys.readouterr().out)["flags"]
        assert [(f["day"], f["metric"]) for f in flags] == [(SHIFT_DAY.isoformat(), "refusal_rate")]
    finally:
        server.stop()


async def _run_in_thread(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(main, argv)  # the report runs its own event loop


def test_sketch_quantile_within_a_bucket() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(6, 0.5) for _ in range(5000)]
    hist = [0] * 96
    for v in values:
        hist[lat_bucket(v)] += 1
    exact = sorted(values)[int(0.95 * len(values))]
    approx = quantile(hist, 0.95)
    assert approx is not None and abs(approx / exact - 1) < 0.1
    assert psi(hist, hist) == 0.0


@given(st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
def test_lat_bucket_contains_value(ms: float) -> None:
    i = lat_bucket(ms)
    assert 0 <= i < 96
    if 1.0 < ms < 1e6:
        mid = lat_bucket_mid(i)
        assert mid / 1.2 <= ms <= mid * 1.2


def test_evaluate_needs_a_baseline() -> None:
    assert evaluate([]) == []


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**62),  # start_ns
            st.sampled_from([None, "small", "large"]),  # the deployment that served
            st.sampled_from([None, "small", "large"]),  # the last attempt's, if any
        ),
        min_size=1,
        max_size=8,
    )
)
def test_feedback_lands_in_the_hour_and_deployment_of_its_request(
    requests: list[tuple[int, str | None, str | None]],
) -> None:
    # The oracle is what remember stored before it kept the start instead of the hour:
    # (_served_by(rec), hour_of(rec.start_ns)).
    agg = DriftAggregator(None, feedback_capacity=100)
    expected: dict[str, tuple[str, int]] = {}
    for i, (start_ns, served, last) in enumerate(requests):
        rec = record(f"r{i}", start_ns=start_ns, deployment=served)
        if last is None:
            rec.attempts.clear()
        else:
            rec.attempts[-1].deployment = last
        agg.remember(rec)
        expected[rec.request_id] = (_served_by(rec), hour_of(start_ns))
    for request_id in expected:
        assert agg.add_feedback(request_id, 1.0)
    landed = {
        (a.deployment, hour): a.feedback_n
        for hour, by_dep in agg._open.items()
        for a in by_dep.values()
    }
    assert landed == dict(Counter((d, h) for d, h in expected.values()))
