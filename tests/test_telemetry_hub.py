"""The telemetry facade: request log lines, bounded queues, Prometheus exposition, admin handlers."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from telemetry_helpers import config, record
from tiergate.telemetry import Telemetry, add_admin_routes, feedback_handler, hub
from tiergate.telemetry.logline import HOLD_BYTES, JsonLines, attempt_fields
from tiergate.telemetry.record import AttemptRecord


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def streams() -> tuple[io.BytesIO, io.BytesIO]:
    return io.BytesIO(), io.BytesIO()


async def test_one_log_line_per_request_with_every_attempt(
    streams: tuple[io.BytesIO, io.BytesIO],
) -> None:
    log, safety = streams
    tel = Telemetry.from_config(config(), log_stream=log, safety_stream=safety)
    await tel.start()
    tel.record(record("r1"))
    tel.record(record("r2", deployment=None, status=502, fallback=True, error_type="api_error"))
    await tel.stop()
    lines = [orjson.loads(x) for x in log.getvalue().splitlines()]
    assert [x["request_id"] for x in lines] == ["r1", "r2"]
    first = lines[0]
    for key in ("tenant", "route", "deployment", "provider", "tier", "fallbacks", "hedged", "idempotency", "stream",
                "ttft_ms", "latency_ms", "tokens", "cost_usd", "predicted_quality", "decision_us", "decision_reason",
                "relaxed", "safety", "status"):  # fmt: skip
        assert key in first, key
    assert first["tokens"] == {"input": 120, "output": 30, "cached": 10, "reasoning": 0}
    assert [(a["deployment"], a["status"], a["error_class"]) for a in first["attempts"]] == [
        ("large", 503, "server_error"),
        ("small", 200, None),
    ]
    assert first["safety"] == ["email:redact"]
    assert "prompt" not in first and "completion" not in first
    assert lines[1]["deployment"] is None and lines[1]["status"] == 502
    assert safety.getvalue() == b""  # findings go to the safety stream only via record_safety


async def test_safety_findings_have_their_own_stream(
    streams: tuple[io.BytesIO, io.BytesIO],
) -> None:
    from tiergate.telemetry.record import SafetyFinding

    log, safety = streams
    tel = Telemetry.from_config(config(), log_stream=log, safety_stream=safety)
    await tel.start()
    tel.record_safety(
        [SafetyFinding("card", "input", "block", "messages[1].parts[0]")], "r9", "acme"
    )
    await tel.stop()
    assert log.getvalue() == b""
    (event,) = [orjson.loads(x) for x in safety.getvalue().splitlines()]
    assert event["event"] == "safety_finding"
    assert (event["kind"], event["action"], event["request_id"], event["tenant"]) == (
        "card",
        "block",
        "r9",
        "acme",
    )
    samples = _samples(tel.metrics.exposition().decode())
    key = (
        "tiergate_safety_findings_total",
        (("action", "block"), ("kind", "card"), ("where", "input")),
    )
    assert samples[key] == 1


async def test_full_queues_drop_and_count(streams: tuple[io.BytesIO, io.BytesIO]) -> None:
    log, safety = streams
    tel = Telemetry.from_config(
        config(telemetry={"queue_size": 2}), log_stream=log, safety_stream=safety
    )
    for i in range(5):  # not started: nothing drains
        tel.record(record(f"r{i}"))
    assert tel.dropped["log"] == 3 and tel.dropped["metrics"] == 3
    assert "drift" not in tel.dropped  # drift is off in this config: no aggregates kept
    await tel.start()
    await tel.stop()
    assert len(log.getvalue().splitlines()) == 2
    samples = _samples(tel.metrics.exposition().decode())
    assert samples[("tiergate_telemetry_dropped_total", (("sink", "log"),))] == 3


async def test_prometheus_exposition_counts_what_was_recorded(
    streams: tuple[io.BytesIO, io.BytesIO],
) -> None:
    log, safety = streams
    tel = Telemetry.from_config(config(), log_stream=log, safety_stream=safety)
    await tel.start()
    for i in range(3):
        tel.record(record(f"ok{i}"))
    tel.record(record("bad", deployment=None, status=503, error_type="api_error"))
    tel.record(record("x", route="no-such-route"))  # unbounded label values become "other"
    tel.ejection("large")
    tel.cooldown("small")
    tel.cooldown("unknown-deployment")
    tel.hedge("chat", "small")
    await tel.stop()
    s = _samples(tel.metrics.exposition().decode())
    assert (
        s[
            (
                "tiergate_requests_total",
                (("deployment", "small"), ("outcome", "ok"), ("route", "chat")),
            )
        ]
        == 3
    )
    assert (
        s[
            (
                "tiergate_requests_total",
                (("deployment", "none"), ("outcome", "error"), ("route", "chat")),
            )
        ]
        == 1
    )
    assert (
        s[
            (
                "tiergate_requests_total",
                (("deployment", "small"), ("outcome", "ok"), ("route", "other")),
            )
        ]
        == 1
    )
    assert s[("tiergate_fallbacks_total", (("route", "chat"),))] == 4
    assert (
        s[("tiergate_attempts_total", (("deployment", "large"), ("outcome", "server_error")))] == 5
    )
    assert s[("tiergate_ejections_total", (("deployment", "large"),))] == 1
    assert s[("tiergate_cooldowns_total", (("deployment", "other"),))] == 1
    assert (
        s[
            (
                "tiergate_hedges_total",
                (("deployment", "small"), ("outcome", "started"), ("route", "chat")),
            )
        ]
        == 1
    )
    assert s[("tiergate_idempotency_total", (("outcome", "miss"),))] == 5
    assert s[
        (
            "tiergate_cost_usd_total",
            (("deployment", "small"), ("route", "chat"), ("tenant", "acme")),
        )
    ] == pytest.approx(3 * 0.000036)
    assert s[("tiergate_route_latency_budget_seconds", (("route", "chat"),))] == 2.0
    assert s[("tiergate_tenant_daily_spend_budget_usd", (("tenant", "acme"),))] == 50
    dur = {k: v for k, v in s.items() if k[0] == "gen_ai_client_operation_duration_seconds_count"}
    assert sum(dur.values()) == 5
    ok_labels = dict(
        next(k[1] for k in dur if ("route", "chat") in k[1] and ("error_type", "") in k[1])
    )
    assert ok_labels["operation"] == "chat" and ok_labels["provider"] == "openai"
    assert ok_labels["response_model"] == "gpt-4o-mini-2024-07-18"
    # 420 ms falls in the 0.64 s bucket, not the 0.32 s one.
    bucket = [
        (k, v)
        for k, v in s.items()
        if k[0] == "gen_ai_client_operation_duration_seconds_bucket"
        and dict(k[1]) | {} == {**ok_labels, "le": "0.32"}
    ]
    assert bucket and bucket[0][1] == 0
    tokens = [
        v
        for k, v in s.items()
        if k[0] == "gen_ai_client_token_usage_sum" and ("token_type", "input") in k[1]
    ]
    assert sum(tokens) == 5 * 120
    ttft = [
        v
        for k, v in s.items()
        if k[0] == "gen_ai_client_operation_time_to_first_chunk_seconds_count"
    ]
    assert sum(ttft) == 5


async def test_admin_metrics_and_feedback_handlers(streams: tuple[io.BytesIO, io.BytesIO]) -> None:
    log, safety = streams
    tel = Telemetry.from_config(config(), log_stream=log, safety_stream=safety)
    await tel.start()
    admin, app = web.Application(), web.Application()
    add_admin_routes(admin, tel)
    app.router.add_post("/v1/feedback", feedback_handler(tel, web.BaseRequest.read))
    tel.record(record("known"))
    async with TestClient(TestServer(admin)) as ac, TestClient(TestServer(app)) as c:
        resp = await ac.get("/metrics")
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(await resp.text())}
        assert {"tiergate_requests", "gen_ai_client_operation_duration_seconds"} <= names
        for body, param in [
            ({"score": 1}, "request_id"),
            ({"request_id": "known"}, "score"),
            ({"request_id": "known", "score": 1.5}, "score"),
            ({"request_id": "known", "score": True}, "score"),
            ({"request_id": 7, "score": 1}, "request_id"),
        ]:
            r = await c.post("/v1/feedback", json=body)
            err = (await r.json())["error"]
            assert (
                r.status == 400 and err["param"] == param and err["type"] == "invalid_request_error"
            )
        r = await c.post("/v1/feedback", data=b"{nope")
        assert r.status == 400
        r = await c.post("/v1/feedback", json={"request_id": "never-seen", "score": 1})
        assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_request_id"
        r = await c.post("/v1/feedback", json={"request_id": "known", "score": 0.25})
        assert r.status == 200
    await tel.stop()
    (row,) = tel.drift.rows()
    assert (row["deployment"], row["feedback_n"], row["feedback_sum"]) == ("small", 1, 0.25)


async def test_exporters_take_turns_with_requests(streams: tuple[io.BytesIO, io.BytesIO]) -> None:
    """A batch leaves a slice at a time, each slice its own turn of the event loop: what
    was queued when the timer fired (a request's next step) runs after one slice, not
    after the whole batch."""
    log, safety = streams
    tel = Telemetry.from_config(config(), log_stream=log, safety_stream=safety)
    await tel.start()
    n = 3 * hub.BATCH
    for i in range(n):
        tel.record(record(f"r{i}"))
    loop = asyncio.get_running_loop()
    tel._linger.cancel()
    tel._linger._fire()  # what the timer does, now
    assert tel._log is not None

    def exported() -> int:  # lines written, and those held for the drain's one write
        assert tel._log is not None
        return len(log.getvalue().splitlines()) + b"".join(tel._log._held).count(b"\n")

    seen: list[int] = []
    loop.call_soon(lambda: seen.append(exported()))
    for _ in range(2 * n):
        await asyncio.sleep(0)
    assert seen == [hub.BATCH]
    assert len(log.getvalue().splitlines()) == n
    await tel.stop()


class _Writes(io.BytesIO):
    """A log stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, b: object) -> int:
        self.writes += 1
        return super().write(b)  # type: ignore[arg-type]


async def test_a_drain_is_written_once() -> None:
    """However many slices the queue leaves in, its lines reach the stream in one write
    (and a flush): in a pod each write to stdout wakes the log collector."""
    log = _Writes()
    tel = Telemetry.from_config(config(), log_stream=log, safety_stream=io.BytesIO())
    await tel.start()
    n = 5 * hub.BATCH + 1
    for i in range(n):
        tel.record(record(f"r{i}"))
    tel._linger.cancel()
    tel._linger._fire()
    for _ in range(2 * n):
        await asyncio.sleep(0)
    assert log.writes == 1
    assert [orjson.loads(x)["request_id"] for x in log.getvalue().splitlines()] == [
        f"r{i}" for i in range(n)
    ]
    tel.record(record("late"))
    await tel.stop()  # what stop drains is written too
    assert log.writes == 2
    assert orjson.loads(log.getvalue().splitlines()[-1])["request_id"] == "late"


def test_held_lines_are_written_past_the_bound() -> None:
    """A queue that never empties still writes: held lines go out once they reach
    HOLD_BYTES, so memory stays bounded."""
    log = _Writes()
    lines = JsonLines("-", log)
    line = b"x" * 1000 + b"\n"
    per_write = -(-HOLD_BYTES // len(line))
    for _ in range(per_write - 1):
        lines.hold(line)
    assert log.writes == 0
    lines.hold(line)
    assert log.writes == 1 and log.getvalue() == line * per_write
    lines.hold(line)
    lines.close()
    assert log.writes == 2 and log.getvalue() == line * (per_write + 1)


async def test_record_is_cheap() -> None:
    import time

    tel = Telemetry.from_config(
        config(telemetry={"queue_size": 100_000}),
        log_stream=io.BytesIO(),
        safety_stream=io.BytesIO(),
    )
    rec = record()
    n = 5_000
    t0 = time.perf_counter()
    for _ in range(n):
        tel.record(rec)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    await tel.start()
    await tel.stop()
    assert per_call_us < 50, per_call_us


def test_attempts_are_written_as_orjson_writes_the_dataclass() -> None:
    # attempt_fields is hand-written for speed; a field added to AttemptRecord but not
    # there would silently vanish from the log.
    values = {
        f.name: (f"v-{f.name}" if f.type == "str" else 7) for f in dataclasses.fields(AttemptRecord)
    }
    values.update(hedge=True, cancelled=True, ms=1.5, ttft_ms=0.25, cost_usd=0.125)
    a = AttemptRecord(**values)  # type: ignore[arg-type]
    assert orjson.dumps(attempt_fields(a)) == orjson.dumps(a)
