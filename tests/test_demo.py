"""`make demo` stays true: the demo starts the simulators and the sidecar as processes,
drives its scenario with the real SDKs and reports no failure."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_nothing_fails() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tiergate.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "13 requests, 0 failed" in out
    for provider_deployment in (
        "gemini-flash",
        "llama-8b",
        "llama-70b",
        "claude-sonnet",
        "claude-haiku",
    ):
        assert provider_deployment in out
    assert "outage → fallback" in out
