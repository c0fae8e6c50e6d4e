"""Planner: from a canonical request and its envelope to a ranked plan of deployments.

Everything that does not depend on the request is compiled once per config into the
core's :class:`~tiergate._core.Router`: the candidate table, priors and live latency
windows, and the route scopes (allowed and leading candidates, the route's settings, its
pinned deployment) with each route's rolling mean of output tokens. Health tells the
router which deployments are held out (ejected, cooling down) when that changes. Per
request the planner hands the core the route's index, the envelope's and the tenant's
settings, the capability bits and prompt tokens, and gets back the feature record and
the plan ordered by the route's scope (DESIGN.md §3), in one call. Quality comes from a
:class:`QualityModel`: a prior per tier adjusted by a request-difficulty heuristic until
the learned classifier is loaded.

If the decision takes longer than ``routing.decision_budget_ms``, the route's default
deployment serves and the plan says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol, cast

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

# The feature record of one request, as the core built and planned it (header, tenant and
# route settings resolved, expected output from the route's mean: ``_core.Router.request``).
Request = _core.PlanRequest


class Plan(NamedTuple):
    """A request's plan. A tuple (built without a Python ``__init__``: about 1.2k
    instructions fewer per request than a slotted dataclass), read by name."""

    deployments: list[str]  # primary first, then the fallback chain
    reason: str
    decision_us: float
    relaxed: list[str]
    request: Request | None
    qualities: list[float] | None
    hedge: bool

    def predicted_quality(self, planner: Planner, deployment: str) -> float | None:
        if self.qualities is None:
            return None
        return self.qualities[planner.index[deployment]]


# Plan's fields as one tuple, no namedtuple __new__ frame (the fields are Plan's, in order).
_new_plan = cast("Callable[[type[Plan], tuple[object, ...]], Plan]", tuple.__new__)


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
    for it within ``Router.route_heuristic``); ``tests/core_reference.py`` keeps the
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
        request.last_text,
        bool(request.tools),
        request.response_format.kind == "json_schema",
    )


def tier_prior(rank: int, tiers: int) -> float:
    """Default quality prior of a tier: 0.70 for the smallest up to 0.95 for the largest."""
    return 0.95 if tiers <= 1 else 0.70 + 0.25 * rank / (tiers - 1)


class _Scope:
    """A route as the planner reads it on every request: its index in the core's scopes
    (which hold its masks and settings) and what the plan takes beside the core's answer."""

    __slots__ = ("default", "hedge", "index", "route")

    def __init__(self, route: RouteConfig, index: int) -> None:
        self.route = route
        self.index = index
        self.default = route.default
        self.hedge = route.hedge


class Planner:
    __slots__ = (
        "_all",
        "_budget_us",
        "_config",
        "_heuristic",
        "_limited",
        "_scopes",
        "_tier_masks",
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
        tiers = {name: dep.tier for name, dep in config.deployments.items()}
        self._all = (1 << len(self.names)) - 1
        self._tier_masks = {
            tier: sum(1 << i for i, n in enumerate(self.names) if tiers[n] == tier)
            for tier in config.tiers
        }
        scopes = [self._scope(name) for name in config.route_names()]
        self._scopes: dict[str, _Scope] = {
            row[0]: _Scope(route, i) for i, (row, route) in enumerate(scopes)
        }
        # The core keeps the routes' output means across a reload (by route name) with
        # the latency windows (by deployment name).
        self.router: _core.Router = _core.Router(
            rows,
            window_s=routing.window_s,
            min_samples=routing.min_samples,
            previous=previous.router if previous is not None else None,
            routes=[row for row, _ in scopes],
            flags=_core.FLAG_ALLOW_QUALITY_RELAX if routing.allow_quality_relax else 0,
        )
        self._heuristic = HeuristicQuality(self.router)
        self.quality: QualityModel = self._heuristic
        if routing.quality_model is not None:  # the learned classifier (tiergate.classifier)
            model = load_quality_model(config.base_dir / routing.quality_model)
            self.quality = LearnedQuality(model, config, priors)
        self.health: Health = Health(
            routing.ejection,
            tiers,
            self.index,
            previous.health if previous else None,
            hold=self.router.hold,
        )
        self.limits: Limits = Limits(
            config.deployments,
            self.index,
            routing.limit_headroom,
            previous.limits if previous else None,
        )
        self._limited = self.limits.limited
        self._budget_us = routing.decision_budget_ms * 1000

    def _scope(self, name: str) -> tuple[_ScopeRow, RouteConfig]:
        """The core's row of route ``name`` (allowed and first masks, settings, pinned
        deployment) and its config."""
        route = self._config.resolve_route(name)
        assert route is not None
        tiers = self._config.tiers
        allowed = first = self._all
        pinned = None
        if route.deployment is not None:
            rank = self._config.tier_rank(self._config.deployments[route.deployment].tier)
            allowed = sum(self._tier_masks[t] for t in tiers[rank:])
            pinned = self.index[route.deployment]
            first = 1 << pinned
        elif route.tier is not None:
            rank = tiers.index(route.tier)
            allowed = sum(self._tier_masks[t] for t in tiers[rank:])
            first = self._tier_masks[route.tier]
        row = (
            name,
            allowed,
            first,
            route.latency_budget_ms,
            route.max_cost_usd,
            route.min_quality,
            pinned,
        )
        return row, route

    def route(self, name: str) -> RouteConfig:
        scope = self._scopes.get(name)
        if scope is None:
            raise _unknown_route(name)
        return scope.route

    def features(
        self,
        request: ChatRequest,
        envelope: Envelope,
        tenant: TenantPolicy,
        scope: _Scope | None = None,
        known: Known | None = None,
    ) -> Request:
        """The feature record of ``request``: capability bits and prompt tokens (``known``
        when the core's parse computed them), its route's expected output, the header's
        settings over the tenant's over the route's, what is allowed and unavailable."""
        if scope is None:
            scope = self._scopes.get(envelope.route)
            if scope is None:
                raise _unknown_route(envelope.route)
        return self.router.request(*self._ask(request, envelope, tenant, scope, known))

    def _ask(
        self,
        request: ChatRequest,
        envelope: Envelope,
        tenant: TenantPolicy,
        scope: _Scope,
        known: Known | None,
    ) -> _Ask:
        """What the core's ``Router.request`` and ``route_heuristic`` take first: the
        scope, the request's capabilities and tokens, each setting as the header and the
        tenant give it (the core resolves them over the route's), the masks."""
        caps, prompt_tokens = known if known is not None else _known(request, envelope.surface)
        max_tokens = request.max_tokens
        return (
            scope.index,
            caps,
            prompt_tokens,
            max_tokens,
            envelope.latency_budget_ms,
            tenant.latency_budget_ms,
            envelope.max_cost_usd,
            tenant.max_cost_usd,
            envelope.min_quality,
            tenant.min_quality,
            tenant.allowed_mask,
            self._near_limit(scope, prompt_tokens, max_tokens) if self._limited else 0,
        )

    def _near_limit(self, scope: _Scope, prompt_tokens: int, max_tokens: int | None) -> int:
        """Deployments too close to their RPM/TPM limit for this request's tokens."""
        expected = self.router.expected_output(scope.index, max_tokens)
        return self.limits.near_limit_mask(prompt_tokens + int(expected))

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
        scope = self._scopes.get(envelope.route)
        if scope is None:
            raise _unknown_route(envelope.route)
        quality = self.quality
        if quality is self._heuristic:  # the record, qualities and plan in one core call
            deployments, relaxed, qualities, features = self.router.route_heuristic(
                *self._ask(request, envelope, tenant, scope, known),
                request.last_text,
                bool(request.tools),
                request.response_format.kind == "json_schema",
            )
        else:
            features = self.features(request, envelope, tenant, scope, known)
            qualities = quality.predict(request, features.prompt_tokens)
            floor = quality.floor(
                features.min_quality, qualities, features.allowed_mask & ~features.unavailable_mask
            )
            deployments, relaxed, features = self.router.route(
                scope.index, features, qualities, floor
            )
        elapsed_us = (time.perf_counter_ns() - start) / 1000
        reason = "envelope"
        if elapsed_us > self._budget_us:
            default = scope.default or (deployments[0] if deployments else None)
            if default is not None:
                deployments = [default] + [d for d in deployments if d != default]
            reason = "decision-budget-exceeded"
        elif not deployments:
            reason = "nothing-feasible"
        return _new_plan(
            Plan, (deployments, reason, elapsed_us, relaxed, features, qualities, scope.hedge)
        )

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
        """Feed the live windows and the route's output-token mean after an attempt
        succeeded (the core's ``Router.observe``: a whole answer's first token is
        estimated with the deployment's prior time per token)."""
        self.router.observe(
            route, self.index[deployment], ttft_ms, total_ms, output_tokens, streamed
        )


# Router.request's and route_heuristic's first arguments (Planner._ask): scope index,
# capability bits, prompt tokens, max_tokens, then each setting from the header and from
# the tenant (latency budget, cost ceiling, quality floor), the allowed and near-limit masks.
_Ask = tuple[
    int, int, int, int | None, float | None, float | None, float | None, float | None,
    float | None, float | None, int, int,
]  # fmt: skip

# (name, allowed mask, first mask, latency budget, cost ceiling, quality floor, pinned).
_ScopeRow = tuple[str, int, int, float | None, float | None, float | None, int | None]


def _unknown_route(name: str) -> RequestError:
    return RequestError(
        f"unknown model {name!r}; GET /v1/models lists the routes",
        param="model",
        status=404,
        type="invalid_request_error",
        code="model_not_found",
    )


def _known(request: ChatRequest, surface: Literal["openai", "anthropic"]) -> Known:
    """(required capabilities, prompt tokens) of a request the core's parse did not read;
    ``surface``: the one its body (``raw``) came in on, which the estimate reads."""
    caps = 0
    if request.tools and request.tool_choice != "none":
        caps |= _core.CAP_TOOLS
    if request.response_format.kind == "json_schema":
        caps |= _core.CAP_JSON_SCHEMA
    if request.stream:
        caps |= _core.CAP_STREAMING
    if request.has_images:
        caps |= _core.CAP_VISION
    raw = request.raw
    if not raw:
        return caps, 0
    if surface == "anthropic":
        return caps, _core.estimate_anthropic_tokens(raw)
    return caps, _core.estimate_tokens(raw)
