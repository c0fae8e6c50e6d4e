"""CloudWatch: EMF lines, and batched PutMetricData against moto's server, read back with aiobotocore."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from moto.server import ThreadedMotoServer

from telemetry_helpers import config, record
from tiergate.telemetry import Telemetry


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


async def test_emf_lines_name_metrics_and_dimensions(tmp_path: Any) -> None:
    path = tmp_path / "emf.jsonl"
    tel = Telemetry.from_config(
        config(
            telemetry={
                "log": None,
                "safety_log": None,
                "cloudwatch": {"mode": "emf", "emf_path": str(path)},
            }
        )
    )
    await tel.start()
    tel.record(record("r1"))
    tel.record(record("r2", route="weird-route", ttft_ms=None))
    await tel.stop()
    first, second = (orjson.loads(x) for x in path.read_bytes().splitlines())
    directive = first["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "tiergate" and directive["Dimensions"] == [
        ["Route", "Deployment"]
    ]
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"Requests", "Errors", "Latency", "TimeToFirstToken", "CostUSD", "InputTokens"} <= names
    for n in names:
        assert n in first  # every declared metric has its value
    assert (first["Route"], first["Deployment"], first["Latency"]) == ("chat", "small", 420.0)
    assert second["Route"] == "other" and "TimeToFirstToken" not in second


async def test_put_metric_data_batched_and_read_back(moto_url: str) -> None:
    from aiobotocore.session import get_session

    cw = {
        "mode": "put_metric_data",
        "namespace": "tg-test",
        "endpoint_url": moto_url,
        "batch_size": 3,
        "flush_interval_s": 60,
    }
    tel = Telemetry.from_config(
        config(telemetry={"log": None, "safety_log": None, "cloudwatch": cw})
    )
    await tel.start()
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    for i in range(4):
        tel.record(record(f"r{i}", latency_ms=100.0 * (i + 1)))
    await tel.stop()  # final flush
    sink = tel.cloudwatch
    assert sink.sent >= 7 and sink.failed_calls == 0  # 7+ statistic sets, in batches of 3
    async with get_session().create_client(
        "cloudwatch", region_name="us-east-1", endpoint_url=moto_url
    ) as client:
        listed = await client.list_metrics(Namespace="tg-test")
        names = {m["MetricName"] for m in listed["Metrics"]}
        assert {"Requests", "Latency", "CostUSD", "Errors"} <= names
        dims = [{"Name": "Route", "Value": "chat"}, {"Name": "Deployment", "Value": "small"}]
        stats = await client.get_metric_statistics(
            Namespace="tg-test", MetricName="Latency", Dimensions=dims,
            StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=5),
            Period=60, Statistics=["SampleCount", "Sum", "Maximum"],
        )  # fmt: skip
        points = stats["Datapoints"]
        assert sum(p["SampleCount"] for p in points) == 4
        assert sum(p["Sum"] for p in points) == pytest.approx(1000.0)
        assert max(p["Maximum"] for p in points) == pytest.approx(400.0)


async def test_unreachable_cloudwatch_retries_then_keeps_data_bounded() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cw = {"mode": "put_metric_data", "endpoint_url": f"http://127.0.0.1:{port}", "max_retries": 1,
          "flush_interval_s": 60, "max_buffered": 5}  # fmt: skip
    tel = Telemetry.from_config(
        config(telemetry={"log": None, "safety_log": None, "cloudwatch": cw}),
        log_stream=io.BytesIO(),
    )
    await tel.start()
    tel.record(record("r1"))
    await tel.stop(timeout_s=5)
    sink = tel.cloudwatch
    assert sink.sent == 0 and sink.failed_calls == 2  # first try + one retry
    assert len(sink._pending) == 5  # kept, bounded
    from prometheus_client.parser import text_string_to_metric_families

    dropped = {
        tuple(s.labels.items()): s.value
        for f in text_string_to_metric_families(tel.metrics.exposition().decode())
        for s in f.samples
        if s.name == "tiergate_telemetry_dropped_total"
    }
    assert dropped[(("sink", "cloudwatch"),)] == 3  # 8 statistic sets for one record, 5 kept
