"""Planner: from a canonical request and its envelope to an ordered plan of deployments.

This is the seam the routing decision plugs into. The first version orders a route's
candidates by configuration alone: a pinned deployment first, then its same-tier
siblings, then the tiers above; a tier or ``auto`` route cheapest first. The envelope
policy of the Rust core replaces the ordering without changing this interface.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tiergate.config import Config
from tiergate.envelope import ChatRequest, Envelope
from tiergate.errors import RequestError

__all__ = ["Plan", "Planner"]


@dataclass(slots=True)
class Plan:
    deployments: list[str]  # primary first, then the fallback chain
    reason: str = "config-order"
    decision_us: float = 0.0
    relaxed: list[str] = field(default_factory=list)


class Planner:
    __slots__ = ("_blended", "_config", "_order_by_tier")

    def __init__(self, config: Config) -> None:
        self._config = config
        # Work that does not depend on the request is done once, here.
        deps = config.deployments
        self._blended = {n: d.price.input + 3 * d.price.output for n, d in deps.items()}
        self._order_by_tier = {
            tier: sorted((n for n, d in deps.items() if d.tier == tier), key=self._blended.__getitem__)
            for tier in config.tiers
        }

    def plan(self, request: ChatRequest, envelope: Envelope) -> Plan:
        start = time.perf_counter_ns()
        route = self._config.resolve_route(envelope.route)
        if route is None:
            raise RequestError(
                f"unknown model {envelope.route!r}; GET /v1/models lists the routes",
                param="model",
                status=404,
                code="model_not_found",
            )
        tiers = self._config.tiers
        if route.deployment is not None:
            pinned = route.deployment
            rank = tiers.index(self._config.deployments[pinned].tier)
            order = [pinned] + [d for d in self._order_by_tier[tiers[rank]] if d != pinned]
            for tier in tiers[rank + 1 :]:
                order.extend(self._order_by_tier[tier])
        elif route.tier is not None:
            rank = tiers.index(route.tier)
            order = [d for tier in tiers[rank:] for d in self._order_by_tier[tier]]
        else:
            order = [d for tier in tiers for d in self._order_by_tier[tier]]
        return Plan(order, decision_us=(time.perf_counter_ns() - start) / 1000)
