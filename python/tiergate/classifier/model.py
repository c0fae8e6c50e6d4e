"""The serving side of the learned classifier: the planner's ``QualityModel``.

A model file is read once per config (re)load into the core's frozen
:class:`tiergate._core.QualityModel`; a reload builds a new planner with a new
handle, so the swap is whole. Serving needs only the core and the file (no numpy).

* ``predict``: one core call on the request body scores every family; each router
  candidate takes its family's probability (``DeploymentConfig.family``, or the
  deployment name when that is a family of the model); a candidate without a family
  keeps its tier prior.
* ``floor``: the floor rule, the one the model file names. The planner's floor ``F``
  (header, tenant or route) becomes the absolute threshold the core compares each
  candidate's quality with; the core still enforces capabilities, context,
  availability, latency and cost, and serves the cheapest candidate passing them all.

  - utility (versions 2 to 4; version 3 differs only in how ``q`` is computed, a
    gated head over a few latent scores, all inside the core; version 4 in ``c``):
    among the candidates the request may use (allowed and available) that have a
    family, the winner maximises ``q − λ(F) · c``, ``c`` the cost the core prices the
    family at for this request (``QualityModel.predict_costs``, the same call that
    scores ``q``): version 4's predicted cost per call for the prompt (its task gate
    and length), the family's mean cost per call before — the units ``λ`` was
    calibrated in by cross-validation, and the numbers ``tiergate classifier eval``
    routes with. The threshold is the winner's own ``q``: a candidate passing it
    predicts at least as well, so (``λ > 0``) its cost is at least the winner's, and
    the core's cheapest feasible is the winner — exactly when the deployments' prices
    rank those families as the model's costs do (the core orders by each deployment's
    expected cost for the request). A candidate without a family keeps its prior and
    is feasible only when that prior reaches the threshold. Predicted qualities are
    passed to the core unchanged (they show in ``explain``), and the fallback chain
    keeps the candidates predicting at least the winner's quality. With no usable
    family candidate, ``F`` is compared as given (like priors).
  - threshold (version 1): ``clamp(F · q_best − offset(F), 0, q_best)``, ``q_best``
    the best prediction among the usable candidates.

  ``λ(F)`` or ``offset(F)`` of the configured tenant and route floors are computed at
  load; a header floor interpolates the table per request.
"""

from __future__ import annotations

import math
from pathlib import Path

from tiergate import _core
from tiergate.config import Config
from tiergate.envelope import ChatRequest
from tiergate.errors import ConfigError

__all__ = ["LearnedQuality", "load_quality_model"]


def load_quality_model(path: Path) -> _core.QualityModel:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"routing.quality_model: cannot read {path}: {exc.strerror}"]) from None
    try:
        return _core.QualityModel.from_json(raw)
    except ValueError as exc:
        raise ConfigError([f"routing.quality_model: {path}: {exc}"]) from None


class LearnedQuality:
    """``predict`` then ``floor``, called back to back by the planner for one request
    (no await between them): under the utility rule ``predict`` keeps that request's
    costs per candidate for ``floor``, which uses them only for the very list
    ``predict`` returned (any other list is priced at the stored mean costs)."""

    __slots__ = (
        "_costs",
        "_last",
        "_model",
        "_offsets",
        "_slots",
        "_utility",
        "names",
    )

    def __init__(self, model: _core.QualityModel, config: Config, priors: list[float]) -> None:
        self._model = model
        families = {f: i for i, f in enumerate(model.families)}
        # Per candidate: (family index, -1 = none) and the prior it keeps otherwise.
        self._slots: list[tuple[int, float]] = []
        for (name, dep), prior in zip(config.deployments.items(), priors, strict=True):
            fam = dep.family if dep.family is not None else name
            self._slots.append((families.get(fam, -1), prior))
        self.names = list(config.deployments)
        floors = {
            f
            for f in [
                *(t.min_quality for t in config.tenants.values()),
                *(r.min_quality for r in config.routes.values()),
            ]
            if f is not None
        }
        self._utility = model.rule == "utility"
        # λ(F) (utility) or offset(F) (threshold) of the configured floors.
        point = model.cost_weight if self._utility else model.offset
        self._offsets = {f: point(f) for f in floors}
        costs = model.costs
        # Per candidate: the family's mean cost per call (utility rule), None = no family.
        self._costs: list[float | None] = [
            costs[i] if self._utility and i >= 0 else None for i, _ in self._slots
        ]
        # The last prediction and its costs per candidate (utility rule).
        self._last: tuple[list[float], list[float | None]] | None = None

    @property
    def model(self) -> _core.QualityModel:
        return self._model

    def predict(self, request: ChatRequest, prompt_tokens: int) -> list[float]:
        if not self._utility:
            probs = self._model.predict(request.raw) if request.raw else [0.0] * len(self._model)
            return [probs[i] if i >= 0 else prior for i, prior in self._slots]
        if not request.raw:
            self._last = None
            return [0.0 if i >= 0 else prior for i, prior in self._slots]
        probs, costs = self._model.predict_costs(request.raw)
        qualities = [probs[i] if i >= 0 else prior for i, prior in self._slots]
        self._last = (qualities, [costs[i] if i >= 0 else None for i, _ in self._slots])
        return qualities

    def floor(self, min_quality: float, qualities: list[float], usable_mask: int) -> float:
        """The absolute threshold for the core (see the module docstring)."""
        if min_quality <= 0:
            return 0.0
        if self._utility:
            return self._utility_floor(min_quality, qualities, usable_mask)
        best = 0.0
        for i, q in enumerate(qualities):
            if usable_mask >> i & 1 and q > best:
                best = q
        if best <= 0:
            return min_quality
        offset = self._offsets.get(min_quality)
        if offset is None:
            offset = self._model.offset(min_quality)
        return min(max(min_quality * best - offset, 0.0), best)

    def _utility_floor(self, min_quality: float, qualities: list[float], usable_mask: int) -> float:
        lam = self._offsets.get(min_quality)
        if lam is None:
            lam = self._model.cost_weight(min_quality)
        last = self._last
        costs = last[1] if last is not None and last[0] is qualities else self._costs
        win_q = -1.0
        win_u = -math.inf
        win_c = math.inf
        for i, (q, c) in enumerate(zip(qualities, costs, strict=True)):
            if c is None or not usable_mask >> i & 1:
                continue
            u = q - lam * c
            if u > win_u or (u == win_u and c < win_c):
                win_q, win_u, win_c = q, u, c
        return min_quality if win_q < 0 else win_q
