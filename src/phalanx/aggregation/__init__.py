"""Aggregators: pure vectorised maths on an ``n x d`` stack, chosen by name from a registry."""

from phalanx.aggregation.base import Aggregator, StreamingAggregator
from phalanx.aggregation.fedavg import FedAvg
from phalanx.aggregation.registry import AGGREGATORS, build_aggregator

__all__ = ["AGGREGATORS", "Aggregator", "FedAvg", "StreamingAggregator", "build_aggregator"]
