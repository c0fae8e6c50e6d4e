"""Planner: from a canonical request and its envelope to a ranked plan of deployments.

Everything that does not depend on the request is compiled once per config into the
core's :class:`~tiergate._core.Router` (candidate table, priors, live latency windows)
and into bitmasks (route scopes, tenant allow-lists). Per request the planner builds
the feature record — capability bits, estimated prompt tokens, output bound and
expectation, envelope constraints, what is unavailable — and asks the core for the
ranked plan (DESIGN.md §3). Quality comes from a :class:`QualityModel`: a prior per tier
adjusted by a request-difficulty heuristic until the learned classifier is loaded.

If the decision takes longer than ``routing.decision_budget_ms``, the route's default
deployment serves and the plan says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from tiergate import _core
from tiergate.classifier.model import LearnedQuality, load_quality_model
from tiergate.config import Config, RouteConfig
from tiergate.envelope import ChatRequest, Envelope
from tiergate.errors import RequestError
from tiergate.routing.health import Health
from tiergate.routing.limits import Limits
from tiergate.routing.tenants import TenantPolicy

__all__ = ["HeuristicQuality", "Known", "Plan", "Planner", "QualityModel", "Request"]

_CAP_BITS = {
    "tools": _core.CAP_TOOLS,
    "json_schema": _core.CAP_JSON_SCHEMA,
    "vision": _core.CAP_VISION,
    "streaming": _core.CAP_STREAMING,
}
_RELAXED = (
    (_core.RELAX_LATENCY, "latency"),
    (_core.RELAX_COST, "cost"),
    (_core.RELAX_QUALITY, "quality"),
)
_VERDICTS = (
    (_core.V_CAPABILITY, "capability"),
    (_core.V_CONTEXT, "context"),
    (_core.V_UNAVAILABLE, "unavailable"),
    (_core.V_NOT_ALLOWED, "not_allowed"),
    (_core.V_LATENCY, "latency"),
    (_core.V_COST, "cost"),
    (_core.V_QUALITY, "quality"),
)
# (required capabilities, prompt tokens) of a request, when the core computed them with
# its parse (``_core.ingest_chat_request``): what ``Planner.features`` would compute.
Known = tuple[int, int]
# Output tokens expected of a route before any answer was seen.
INITIAL_OUTPUT_TOKENS = 256.0
# Weight of the newest answer in a route's rolling mean of output tokens.
OUTPUT_EWMA_ALPHA = 0.05


@dataclass(slots=True)
class Request:
    """The feature record of one request, as the core receives it."""

    required_caps: int
    prompt_tokens: int
    max_output_tokens: int
    expected_output_tokens: int
    latency_budget_ms: float
    max_cost_usd: float
    min_quality: float
    allowed_mask: int
    unavailable_mask: int
    flags: int

    def args(self) -> tuple[int, int, int, int, float, float, float, int, int, int]:
        return (
            self.required_caps,
            self.prompt_tokens,
            self.max_output_tokens,
            self.expected_output_tokens,
            self.latency_budget_ms,
            self.max_cost_usd,
            self.min_quality,
            self.allowed_mask,
            self.unavailable_mask,
            self.flags,
        )


@dataclass(slots=True)
class Plan:
    deployments: list[str]  # primary first, then the fallback chain
    reason: str = "envelope"
    decision_us: float = 0.0
    relaxed: list[str] = field(default_factory=list)
    request: Request | None = None
    qualities: list[float] | None = None
    hedge: bool = False

    def predicted_quality(self, planner: Planner, deployment: str) -> float | None:
        if self.qualities is None:
            return None
        return self.qualities[planner.index[deployment]]


class QualityModel(Protocol):
    """Predicted probability of a correct answer, per router candidate, for one request."""

    def predict(self, request: ChatRequest, prompt_tokens: int) -> list[float]: ...

    def floor(self, min_quality: float, qualities: list[float], usable_mask: int) -> float:
        """The absolute threshold the core compares each candidate's quality with.

        The learned model's utility rule (``tiergate.classifier.model``) returns the
        predicted quality of its ``argmax q − λ(F) · cost`` winner among the usable
        candidates, so the core's "cheapest feasible" is that winner while the core
        still enforces capabilities, context, availability, latency and cost."""
        ...


class HeuristicQuality:
    """A prior per deployment (its own ``quality_prior`` or its tier's) lowered for hard
    requests: ``q = prior ** (1 + difficulty)``, difficulty in [0, 1] from prompt length,
    code, tools, schemas and multi-step wording. Small models lose more on hard requests.
    The core computes it (``Router.heuristic_qualities``; the planner's usual path asks
    for it within ``Router.plan_heuristic``); ``tests/core_reference.py`` keeps the
    Python reference."""

    __slots__ = ("_router",)

    def __init__(self, router: _core.Router) -> None:
        self._router = router

    def predict(self, request: ChatRequest, prompt_tokens: int) -> list[float]:
        return self._router.heuristic_qualities(prompt_tokens, *_heuristic_inputs(request))

    def floor(self, min_quality: float, qualities: list[float], usable_mask: int) -> float:
        return min_quality  # priors are absolute: the floor is compared as given


def _heuristic_inputs(request: ChatRequest) -> tuple[str | None, bool, bool]:
    """(last message's text, tools offered, JSON schema asked for)."""
    return (
        request.messages[-1].text if request.messages else None,
        bool(request.tools),
        request.response_format.kind == "json_schema",
    )


def tier_prior(rank: int, tiers: int) -> float:
    """Default quality prior of a tier: 0.70 for the smallest up to 0.95 for the largest."""
    return 0.95 if tiers <= 1 else 0.70 + 0.25 * rank / (tiers - 1)


class _Scope:
    """A route as the planner reads it on every request: the candidates it may use and
    those that come first, and its settings copied out of the config model (a pydantic
    attribute costs about three times a slot's)."""

    __slots__ = (
        "allowed",
        "ceiling",
        "default",
        "first",
        "floor",
        "hedge",
        "latency_budget_ms",
        "pinned",
        "route",
    )

    def __init__(self, route: RouteConfig, allowed: int, first: int) -> None:
        self.route = route
        self.allowed = allowed
        self.first = first
        self.latency_budget_ms = route.latency_budget_ms
        self.ceiling = route.max_cost_usd
        self.floor = route.min_quality
        self.pinned = route.deployment
        self.default = route.default
        self.hedge = route.hedge


class Planner:
    __slots__ = (
        "_all",
        "_budget_us",
        "_config",
        "_flags",
        "_heuristic",
        "_output_mean",
        "_scopes",
        "_tier_masks",
        "_tpot_prior",
        "health",
        "index",
        "limits",
        "names",
        "quality",
        "router",
    )

    def __init__(self, config: Config, previous: Planner | None = None) -> None:
        self._config = config
        routing = config.routing
        self.names = list(config.deployments)
        self.index = {name: i for i, name in enumerate(self.names)}
        rows = []
        priors = []
        for name, dep in config.deployments.items():
            rank = config.tier_rank(dep.tier)
            prior = (
                dep.quality_prior
                if dep.quality_prior is not None
                else tier_prior(rank, len(config.tiers))
            )
            priors.append(prior)
            caps = 0
            for cap in dep.capabilities:
                caps |= _CAP_BITS[cap]
            cached = dep.price.cached if dep.price.cached is not None else dep.price.input
            rows.append(
                (
                    name,
                    rank,
                    dep.price.input,
                    dep.price.output,
                    cached,
                    dep.context_window,
                    caps,
                    dep.latency_prior.ttft_ms,
                    dep.latency_prior.tpot_ms,
                    prior,
                )
            )
        self.router: _core.Router = _core.Router(
            rows,
            window_s=routing.window_s,
            min_samples=routing.min_samples,
            previous=previous.router if previous is not None else None,
        )
        self._heuristic = HeuristicQuality(self.router)
        self.quality: QualityModel = self._heuristic
        if routing.quality_model is not None:  # the learned classifier (tiergate.classifier)
            model = load_quality_model(config.base_dir / routing.quality_model)
            self.quality = LearnedQuality(model, config, priors)
        tiers = {name: dep.tier for name, dep in config.deployments.items()}
        self.health: Health = Health(
            routing.ejection, tiers, self.index, previous.health if previous else None
        )
        self.limits: Limits = Limits(
            config.deployments,
            self.index,
            routing.limit_headroom,
            previous.limits if previous else None,
        )
        self._all = (1 << len(self.names)) - 1
        self._tier_masks = {
            tier: sum(1 << i for i, n in enumerate(self.names) if tiers[n] == tier)
            for tier in config.tiers
        }
        self._scopes: dict[str, _Scope] = {name: self._scope(name) for name in config.route_names()}
        self._output_mean: dict[str, float] = (
            dict(previous._output_mean) if previous is not None else {}
        )
        # Per router index, read by observe on every answer (not through the config model).
        self._tpot_prior = [dep.latency_prior.tpot_ms for dep in config.deployments.values()]
        self._budget_us = routing.decision_budget_ms * 1000
        self._flags = 1 if routing.allow_quality_relax else 0

    def _scope(self, name: str) -> _Scope:
        route = self._config.resolve_route(name)
        assert route is not None
        tiers = self._config.tiers
        if route.deployment is not None:
            rank = self._config.tier_rank(self._config.deployments[route.deployment].tier)
            scope = sum(self._tier_masks[t] for t in tiers[rank:])
            return _Scope(route, scope, 1 << self.index[route.deployment])
        if route.tier is not None:
            rank = tiers.index(route.tier)
            return _Scope(
                route,
                sum(self._tier_masks[t] for t in tiers[rank:]),
                self._tier_masks[route.tier],
            )
        return _Scope(route, self._all, self._all)

    def route(self, name: str) -> RouteConfig:
        return self._lookup(name).route

    def _lookup(self, name: str) -> _Scope:
        scope = self._scopes.get(name)
        if scope is None:
            raise RequestError(
                f"unknown model {name!r}; GET /v1/models lists the routes",
                param="model",
                status=404,
                type="invalid_request_error",
                code="model_not_found",
            )
        return scope

    def features(
        self,
        request: ChatRequest,
        envelope: Envelope,
        tenant: TenantPolicy,
        scope: _Scope | None = None,
        known: Known | None = None,
    ) -> Request:
        if scope is None:
            scope = self._lookup(envelope.route)
        if known is not None:
            caps, prompt_tokens = known
        else:
            caps = 0
            if request.tools and request.tool_choice != "none":
                caps |= _core.CAP_TOOLS
            if request.response_format.kind == "json_schema":
                caps |= _core.CAP_JSON_SCHEMA
            if request.stream:
                caps |= _core.CAP_STREAMING
            if request.has_images:
                caps |= _core.CAP_VISION
            prompt_tokens = _core.estimate_tokens(request.raw) if request.raw else 0
        mean = self._output_mean.get(envelope.route, INITIAL_OUTPUT_TOKENS)
        expected = min(request.max_tokens, mean) if request.max_tokens else mean
        # The request's header wins, then the tenant's setting, then the route's.
        budget = envelope.latency_budget_ms
        if budget is None:
            budget = tenant.latency_budget_ms
            if budget is None:
                budget = scope.latency_budget_ms
        ceiling = envelope.max_cost_usd
        if ceiling is None:
            ceiling = tenant.max_cost_usd
            if ceiling is None:
                ceiling = scope.ceiling
        floor = envelope.min_quality
        if floor is None:
            floor = tenant.min_quality
            if floor is None:
                floor = scope.floor
        now = time.monotonic()
        unavailable = self.health.unavailable_mask(now) | self.limits.near_limit_mask(
            prompt_tokens + int(expected), now
        )
        return Request(
            caps,
            prompt_tokens,
            request.max_tokens or math.ceil(expected),
            math.ceil(expected),
            budget if budget is not None else math.inf,
            ceiling if ceiling is not None else math.inf,
            floor if floor is not None else 0.0,
            scope.allowed & tenant.allowed_mask,
            unavailable,
            self._flags,
        )

    def plan(
        self,
        request: ChatRequest,
        envelope: Envelope,
        tenant: TenantPolicy,
        known: Known | None = None,
    ) -> Plan:
        """The ranked plan; ``known``: what the core already computed of the request
        (a safety redaction keeps it: it changes texts, not the body or the shape)."""
        start = time.perf_counter_ns()
        scope = self._lookup(envelope.route)
        first = scope.first
        features = self.features(request, envelope, tenant, scope, known)
        quality = self.quality
        if quality is self._heuristic:  # qualities and plan in one call to the core
            f, messages = features, request.messages
            # args() and _heuristic_inputs() spelled out: two calls and two tuples fewer
            # (12.4k instructions -> 9.6k). Keep in step with both.
            order, relaxed_bits, qualities = self.router.plan_heuristic(
                f.required_caps,
                f.prompt_tokens,
                f.max_output_tokens,
                f.expected_output_tokens,
                f.latency_budget_ms,
                f.max_cost_usd,
                f.min_quality,
                f.allowed_mask,
                f.unavailable_mask,
                f.flags,
                messages[-1].text if messages else None,
                bool(request.tools),
                request.response_format.kind == "json_schema",
            )
        else:
            qualities = quality.predict(request, features.prompt_tokens)
            features.min_quality = quality.floor(
                features.min_quality, qualities, features.allowed_mask & ~features.unavailable_mask
            )
            order, relaxed_bits = self.router.plan(*features.args(), qualities=qualities)
        # Route scope: its own tier (or pinned deployment) leads, wider tiers follow.
        names = self.names
        if first == self._all:
            plan = list(map(names.__getitem__, order))  # no comprehension frame
        else:
            plan = [names[i] for i in order if first >> i & 1] + [
                names[i] for i in order if not first >> i & 1
            ]
        pinned = scope.pinned
        if pinned is not None and pinned not in plan and self.health.available(pinned):
            plan.insert(0, pinned)  # the caller named it: serve it even outside the envelope
        elapsed_us = (time.perf_counter_ns() - start) / 1000
        relaxed = [label for bit, label in _RELAXED if relaxed_bits & bit] if relaxed_bits else []
        reason = "envelope"
        if elapsed_us > self._budget_us:
            default = scope.default or (plan[0] if plan else None)
            if default is not None:
                plan = [default] + [d for d in plan if d != default]
            reason = "decision-budget-exceeded"
        elif not plan:
            reason = "nothing-feasible"
        return Plan(plan, reason, elapsed_us, relaxed, features, qualities, scope.hedge)

    def explain(
        self, request: ChatRequest, envelope: Envelope, tenant: TenantPolicy
    ) -> dict[str, object]:
        plan = self.plan(request, envelope, tenant)
        assert plan.request is not None
        rows = self.router.explain(*plan.request.args(), qualities=plan.qualities)
        candidates = []
        for idx, bits, latency, cost, quality in rows:
            name = self.names[idx]
            dep = self._config.deployments[name]
            candidates.append(
                {
                    "deployment": name,
                    "provider": dep.provider,
                    "model": dep.model,
                    "tier": dep.tier,
                    "feasible": bits == 0,
                    "failed": [label for bit, label in _VERDICTS if bits & bit],
                    "predicted_latency_ms": round(latency, 3),
                    "expected_cost_usd": cost,
                    "predicted_quality": round(quality, 4),
                }
            )
        r = plan.request
        return {
            "route": envelope.route,
            "tenant": envelope.tenant,
            "request": {
                "prompt_tokens": r.prompt_tokens,
                "max_output_tokens": r.max_output_tokens,
                "expected_output_tokens": r.expected_output_tokens,
                "latency_budget_ms": None
                if math.isinf(r.latency_budget_ms)
                else r.latency_budget_ms,
                "max_cost_usd": None if math.isinf(r.max_cost_usd) else r.max_cost_usd,
                "min_quality": r.min_quality,
                "required": [label for label, bit in _CAP_BITS.items() if r.required_caps & bit],
            },
            "candidates": candidates,
            "plan": plan.deployments,
            "relaxed": plan.relaxed,
            "reason": plan.reason,
            "decision_us": round(plan.decision_us, 1),
        }

    def observe(
        self,
        route: str,
        deployment: str,
        ttft_ms: float | None,
        total_ms: float,
        output_tokens: int,
        streamed: bool,
    ) -> None:
        """Feed the live windows and the route's output-token mean after an attempt succeeded."""
        idx = self.index[deployment]
        if streamed and ttft_ms is not None:
            tpot = (total_ms - ttft_ms) / (output_tokens - 1) if output_tokens > 1 else math.nan
            self.router.record(idx, ttft_ms, tpot, total_ms)
        else:
            # A whole answer: the first token came at total − generation time, estimated
            # with the deployment's prior time per token.
            ttft = max(total_ms - output_tokens * self._tpot_prior[idx], total_ms * 0.1)
            self.router.record(idx, ttft, math.nan, total_ms)
        key = route
        mean = self._output_mean.get(key, INITIAL_OUTPUT_TOKENS)
        self._output_mean[key] = mean + OUTPUT_EWMA_ALPHA * (output_tokens - mean)
