"""The simulator's shared state: models, statistics, faults, the data set.

Statistics (``GET /_sim/stats``), per provider model id:

- ``calls``: every request that reached a known model, whatever happened to it
  (rate-limited and faulted ones included);
- ``errors``: those answered with an error, cut, stalled, malformed, or abandoned by the
  client before the end;
- ``input_tokens``, ``output_tokens``, ``cost_usd``: only for answers served in full.
  Cost is the data set's recorded cost when the answer came from it, else tokens times the
  model's price;
- ``cached_input_tokens``: of ``input_tokens``, those read from the simulated cache
  (priced at the ``cached`` price);
- ``correct`` (sum of recorded 0/1 correctness) and ``dataset_answers`` (how many answers
  came from the data set), ``rate_limited``, ``streams``, ``by_protocol`` (calls per wire
  protocol).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tiergate.config import Config, DeploymentConfig, Price, SimConfig, SimModelConfig
from tiergate.sim.dataset import Dataset
from tiergate.sim.faults import FaultTable, RateLimiter
from tiergate.sim.latency import LatencyModel

__all__ = ["ModelSpec", "ModelStats", "SimState"]

PayloadFormat = Literal["openai_messages", "tgi"]


@dataclass(slots=True)
class ModelSpec:
    id: str
    latency: LatencyModel
    price: Price
    dataset_model: str | None = None
    limiter: RateLimiter | None = None
    payload_format: PayloadFormat = "openai_messages"
    max_output_tokens: int = 4096


@dataclass(slots=True)
class ModelStats:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    correct: float = 0.0
    dataset_answers: int = 0
    cached_input_tokens: int = 0
    rate_limited: int = 0
    streams: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 12)
        return d


class SimState:
    __slots__ = ("caches", "closing", "config", "dataset", "faults", "models", "seed", "stats")

    def __init__(self, config: Config) -> None:
        self.config = config
        sim = config.sim or SimConfig()
        self.seed = sim.seed
        self.faults = FaultTable(sim.seed)
        self.stats: dict[str, ModelStats] = {}
        self.closing = asyncio.Event()
        # Per model: keys of prompt prefixes already cached (see tiergate.sim.cache).
        self.caches: dict[str, dict[bytes, int]] = {}
        self.dataset: Dataset | None = None
        if sim.dataset:
            path = config.base_dir / sim.dataset
            if not path.is_dir():
                raise FileNotFoundError(f"sim.dataset: {path} is not a directory")
            self.dataset = Dataset.load(path)
        self.models = self._models(config, sim)

    @staticmethod
    def _models(config: Config, sim: SimConfig) -> dict[str, ModelSpec]:
        by_model: dict[str, DeploymentConfig] = {}
        for d in config.deployments.values():
            by_model.setdefault(d.model, d)
        out: dict[str, ModelSpec] = {}
        for model_id in dict.fromkeys([*by_model, *sim.models]):
            mc = sim.models.get(model_id) or SimModelConfig.model_validate({})
            dep = by_model.get(model_id)
            price = mc.price or (dep.price if dep else Price(input=0.0, output=0.0))
            out[model_id] = ModelSpec(
                id=model_id,
                latency=LatencyModel(sim.seed, model_id, mc.ttft_ms, mc.tokens_per_s, mc.sigma),
                price=price,
                dataset_model=mc.dataset_model,
                limiter=RateLimiter(mc.rpm) if mc.rpm else None,
                payload_format=dep.payload_format if dep else "openai_messages",
                max_output_tokens=dep.max_output_tokens if dep else 4096,
            )
        return out

    def stats_for(self, model: str) -> ModelStats:
        st = self.stats.get(model)
        if st is None:
            st = self.stats[model] = ModelStats()
        return st

    def stats_json(self) -> dict[str, Any]:
        return {m: self.stats_for(m).to_json() for m in self.models}

    async def pause(self, seconds: float) -> bool:
        """Sleep, ending early (and returning False) when the server is stopping."""
        if seconds <= 0:
            return not self.closing.is_set()
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            return True
        return False
