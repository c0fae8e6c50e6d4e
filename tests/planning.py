"""The planner checks shared by the tests of the core's one-call request readers: a plan
made with what the core computed of a request (``Known``) is the plan made without it."""

from __future__ import annotations

from functools import cache

from tiergate.config import parse_config
from tiergate.envelope import ChatRequest, Envelope
from tiergate.routing.planner import Known, Planner
from tiergate.routing.tenants import TenantPolicy, Tenants


@cache
def two_tier_planner() -> tuple[Planner, TenantPolicy]:
    """A planner over a small and a large tier (only the large one streams, and both
    have a short context window, so the token estimate and the capabilities matter),
    and the default tenant."""
    config = parse_config(
        {
            "providers": {"p": {"kind": "openai"}},
            "tiers": ["small", "large"],
            "deployments": {
                name: {
                    "provider": "p",
                    "model": name,
                    "tier": tier,
                    "price": {"input": price, "output": price},
                    "capabilities": caps,
                    "context_window": 300,
                }
                for name, tier, price, caps in [
                    ("s", "small", 0.1, []),
                    ("l", "large", 2.0, ["streaming"]),
                ]
            },
        }
    )
    planner = Planner(config)
    return planner, Tenants(config, planner.index).resolve(None, None, None)


def assert_plans_alike(chat: ChatRequest, known: Known, surface: str) -> None:
    planner, tenant = two_tier_planner()
    envelope = Envelope(surface, "auto")  # type: ignore[arg-type]
    alike = [
        plan._replace(decision_us=0.0)
        for plan in (
            planner.plan(chat, envelope, tenant),
            planner.plan(chat, envelope, tenant, known),
        )
    ]
    assert alike[0] == alike[1]
    assert alike[0].request is not None and alike[0].request.required_caps == known[0]
