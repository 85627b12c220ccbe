"""Aggregators: pure vectorised maths on an ``n x d`` stack, chosen by name from a registry."""

from phalanx.aggregation.base import Aggregate, Aggregator, RoundContext, StreamingAggregator
from phalanx.aggregation.fedavg import FedAvg
from phalanx.aggregation.pipeline import Pipeline
from phalanx.aggregation.registry import AGGREGATORS, RULES, STEPS, build_aggregator

__all__ = [
    "AGGREGATORS",
    "RULES",
    "STEPS",
    "Aggregate",
    "Aggregator",
    "FedAvg",
    "Pipeline",
    "RoundContext",
    "StreamingAggregator",
    "build_aggregator",
]
