"""The serving side of the learned classifier: the planner's ``QualityModel``.

A model file is read once per config (re)load into the core's frozen
:class:`tiergate._core.QualityModel`; a reload builds a new planner with a new
handle, so the swap is whole. Serving needs only the core and the file (no numpy).

* ``predict``: one core call on the request body scores every family; each router
  candidate takes its family's probability (``DeploymentConfig.family``, or the
  deployment name when that is a family of the model); a candidate without a family
  keeps its tier prior.
* ``floor``: the floor rule. The planner's floor ``F`` (header, tenant or route)
  becomes the absolute threshold ``clamp(F · q_best − offset(F), 0, q_best)`` the core
  compares each candidate's quality with, ``q_best`` being the best prediction among
  the candidates the request may use (allowed and available). ``offset(F)`` comes
  from the model's operating points; those of the configured tenant and route floors
  are computed at load.
"""

from __future__ import annotations

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
    __slots__ = ("_model", "_offsets", "_slots", "names")

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
        self._offsets = {f: model.offset(f) for f in floors}

    @property
    def model(self) -> _core.QualityModel:
        return self._model

    def predict(self, request: ChatRequest, prompt_tokens: int) -> list[float]:
        probs = self._model.predict(request.raw) if request.raw else [0.0] * len(self._model)
        return [probs[i] if i >= 0 else prior for i, prior in self._slots]

    def floor(self, min_quality: float, qualities: list[float], usable_mask: int) -> float:
        """The absolute threshold for the core (see the module docstring)."""
        if min_quality <= 0:
            return 0.0
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
