"""Hedged requests through real HTTP with the simulators: who is called, who serves,
who is billed. Each test asserts on what the simulator counted (calls, abandoned calls,
cost of answers served in full), not only on what the caller saw."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3

from harness import Stack, fast_sim_config
from tiergate.config import Config


def hedged_config(budget: float) -> Config:
    cfg = fast_sim_config(hedge_budget=budget)
    routes = dict(cfg.routes)
    routes["fast"] = routes["fast"].model_copy(update={"hedge": True})
    return cfg.model_copy(update={"routes": routes})


def warmed(budget: float) -> Stack:
    """A stack whose small-tier clients have each made one call: an AWS client's first
    call (credentials, signing set-up) outlasts a hedge delay of a few milliseconds, and
    these tests are about the calls after it."""
    s = Stack(hedged_config(budget))
    for name, dep in s.config.deployments.items():
        if dep.tier == "small":
            warm = {**body(max_tokens=5), "model": name}
            assert s.post("/v1/chat/completions", warm).status == 200
    s.reset_stats()
    return s


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = warmed(getattr(request, "param", 1.0))
    yield s
    s.close()


def body(**extra: Any) -> dict[str, Any]:
    content = f"Explain hedging briefly. {uuid.uuid4().hex}"  # unique: never a replay
    return {"model": "fast", "messages": [{"role": "user", "content": content}], **extra}


def plan_of(stack: Stack, req: dict[str, Any]) -> list[str]:
    return list(orjson.loads(stack.post("/v1/route/explain", req).data)["plan"])


def model_stats(stack: Stack, deployment: str) -> dict[str, Any]:
    stats: dict[str, Any] = stack.stats().get(stack.config.deployments[deployment].model, {})
    return stats


def settle(stack: Stack, deployment: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The simulator's figures for ``deployment`` once its one call ended: served in
    full (billed) or counted abandoned (an error)."""
    deadline = time.monotonic() + timeout_s
    st = model_stats(stack, deployment)
    while not (st.get("errors", 0) or st.get("cost_usd", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)
        st = model_stats(stack, deployment)
    return st


def test_a_slow_primary_is_hedged_and_the_loser_is_cancelled_unbilled(stack: Stack) -> None:
    req = body(max_tokens=40)
    primary, backup = plan_of(stack, req)[:2]
    stack.fault(primary, "latency", factor=150)  # ~1.5 s: far past its p95 of ~20 ms
    resp = stack.post("/v1/chat/completions", req)
    assert resp.status == 200
    assert resp.headers["x-tiergate-deployment"] == backup
    assert resp.headers["x-tiergate-attempts"] == "2"
    # The primary's call was abandoned when the backup won (so the caller did not wait
    # for it): the simulator counts it as an error and bills nothing for it; the
    # backup's answer was served in full.
    p = settle(stack, primary)
    assert (p["calls"], p["errors"], p["cost_usd"]) == (1, 1, 0)
    b = model_stats(stack, backup)
    assert b["calls"] == 1 and b["errors"] == 0 and b["cost_usd"] > 0


@pytest.mark.parametrize("stack", [0.0], indirect=True)
def test_without_hedge_budget_the_slow_primary_serves_alone(stack: Stack) -> None:
    req = body(max_tokens=40)
    primary, backup = plan_of(stack, req)[:2]
    stack.fault(primary, "latency", factor=30)  # ~0.3 s
    resp = stack.post("/v1/chat/completions", req)
    assert resp.status == 200
    assert resp.headers["x-tiergate-deployment"] == primary
    assert resp.headers["x-tiergate-attempts"] == "1"
    assert stack.calls(backup) == 0


def test_a_hedge_that_would_break_the_cost_ceiling_is_not_started(stack: Stack) -> None:
    req = body(max_tokens=40)
    explained = orjson.loads(stack.post("/v1/route/explain", req).data)
    primary, backup = explained["plan"][:2]
    cost = {c["deployment"]: c["expected_cost_usd"] for c in explained["candidates"]}
    # Room for either call alone, not for both.
    ceiling = max(cost[primary], cost[backup]) * 1.05
    assert ceiling < cost[primary] + cost[backup]
    stack.fault(primary, "latency", factor=30)
    resp = stack.post("/v1/chat/completions", req, {"x-tiergate-max-cost-usd": f"{ceiling:.12f}"})
    assert resp.status == 200
    assert resp.headers["x-tiergate-deployment"] == primary
    assert stack.calls(backup) == 0


def test_a_caller_leaving_a_hedged_request_is_billed_once_and_replayed() -> None:
    stack = warmed(1.0)
    try:
        req = body(max_tokens=40)
        primary, backup = plan_of(stack, req)[:2]
        stack.fault(primary, "latency", factor=150)  # ~1.5 s
        stack.fault(backup, "latency", factor=40)  # ~0.4 s: wins, after the caller left
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            stack.http.request(
                "POST",
                stack.url + "/v1/chat/completions",
                body=orjson.dumps(req),
                headers={"content-type": "application/json"},
                timeout=urllib3.Timeout(read=0.15),
                retries=False,
            )
        # The sidecar finishes the request the caller left: the backup's answer is kept
        # for the caller's retry, and the primary is cancelled as in any hedge it lost.
        b = settle(stack, backup)
        assert b["calls"] == 1 and b["errors"] == 0 and b["cost_usd"] > 0
        p = settle(stack, primary)
        assert (p["calls"], p["errors"], p["cost_usd"]) == (1, 1, 0)
        # The caller's retry is answered from the replay store: no new upstream call.
        again = stack.post("/v1/chat/completions", req)
        assert again.status == 200
        assert again.headers["x-tiergate-deployment"] == backup
        assert again.headers["x-tiergate-replay"] == "true"
        assert stack.calls(primary) == 1 and stack.calls(backup) == 1
    finally:
        stack.close()
