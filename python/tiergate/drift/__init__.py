"""Drift monitoring: hourly aggregates per deployment (:mod:`.aggregate`), their sinks
(:mod:`.sink`), shadow evaluation (:mod:`.shadow`) and the daily report (:mod:`.report`)."""

from tiergate.drift.aggregate import Aggregate, DriftAggregator, hour_of
from tiergate.drift.shadow import ShadowEvaluator

__all__ = ["Aggregate", "DriftAggregator", "ShadowEvaluator", "hour_of"]
