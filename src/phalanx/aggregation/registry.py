"""Aggregators by name. An unknown name is an error that lists the valid ones."""

from __future__ import annotations

from collections.abc import Callable

from phalanx.aggregation.base import Aggregator
from phalanx.aggregation.fedavg import FedAvg
from phalanx.errors import ConfigError

AGGREGATORS: dict[str, Callable[[], Aggregator]] = {"fedavg": FedAvg}


def build_aggregator(name: str) -> Aggregator:
    try:
        factory = AGGREGATORS[name]
    except KeyError:
        valid = ", ".join(sorted(AGGREGATORS))
        raise ConfigError(f"unknown aggregator {name!r}; valid: {valid}") from None
    return factory()
