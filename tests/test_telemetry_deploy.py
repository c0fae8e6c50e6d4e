"""deploy/: alert rules pass promtool (check and unit tests); every metric the dashboard and rules
name is one tiergate exports; the drift report's textfile is what the drift alert reads."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetry_helpers import config, record
from tiergate.drift.report import Flag, prom_textfile
from tiergate.telemetry import Telemetry
from tiergate.telemetry.record import SafetyFinding

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "tiergate-alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "tiergate-alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "tiergate-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run does it)",
)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_rule_unit_tests_fire_the_alerts() -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


async def _exported_names() -> set[str]:
    tel = Telemetry.from_config(config(), log_stream=io.BytesIO(), safety_stream=io.BytesIO())
    await tel.start()
    tel.record(record())
    tel.record_safety([SafetyFinding("email", "input", "log")], "r", "acme")
    tel.ejection("small")
    tel.cooldown("small")
    tel.hedge("chat", "small")
    tel.metrics.shadow.add(1, "chat", "agree")
    tel.metrics.dropped.add(1, "log")
    await tel.stop()
    names: set[str] = set()
    for fam in text_string_to_metric_families(tel.metrics.exposition().decode()):
        names.update(s.name for s in fam.samples)
    textfile = prom_textfile(
        [Flag("2026-01-02", "small", "latency_p95_ms", 1, 2, "+100%", "PSI=1")], date(2026, 1, 2)
    )
    for fam in text_string_to_metric_families(textfile):
        names.update(s.name for s in fam.samples)
    return names


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\b((?:tiergate|gen_ai)_[a-z0-9_]+)\b", text)) - {"tiergate_"}


async def test_dashboard_and_rules_only_name_exported_metrics() -> None:
    exported = await _exported_names()
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    rules = RULES.read_text()
    referenced = _referenced(exprs) | _referenced(rules)  # recording rules (a:b:c) never match
    assert {
        "tiergate_requests_total",
        "gen_ai_client_operation_duration_seconds_bucket",
    } <= referenced
    assert referenced - exported == set()
    assert _referenced("rate(tiergate_bogus_total[5m])") - exported == {"tiergate_bogus_total"}
    assert len(dash["panels"]) >= 12 and len({p["id"] for p in dash["panels"]}) == len(
        dash["panels"]
    )


def test_textfile_holds_only_the_latest_days_flags() -> None:
    flags = [
        Flag("2026-01-01", "small", "cost_per_request_usd", 1, 2, "+100%", "z=9"),
        Flag("2026-01-02", "large", "refusal_rate", 0.01, 0.1, "+9 pt", "z=9"),
    ]
    text = prom_textfile(flags, date(2026, 1, 2))
    samples = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "tiergate_drift_flagged"
    ]
    assert [(s.labels["deployment"], s.labels["metric"], s.value) for s in samples] == [
        ("large", "refusal_rate", 1.0)
    ]
