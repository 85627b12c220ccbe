"""Aggregators by name: a rule from ``RULES`` behind steps from ``STEPS``, each with its own
parameter model. Unknown names or parameters are errors listing the valid ones.

``fedavg`` alone is the streaming ``FedAvg`` (O(d) memory); every other combination holds
the round's n x d stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from phalanx.aggregation.base import Aggregator, Part
from phalanx.aggregation.bulyan import Bulyan
from phalanx.aggregation.centered_clipping import CenteredClipping, CenteredClippingParams
from phalanx.aggregation.fedavg import FedAvg
from phalanx.aggregation.geometric_median import GeometricMedian, GeometricMedianParams
from phalanx.aggregation.krum import Krum, MultiKrum, MultiKrumParams
from phalanx.aggregation.mean import Mean
from phalanx.aggregation.median import Median
from phalanx.aggregation.pipeline import Pipeline, Rule, Step
from phalanx.aggregation.pre.bucketing import Bucketing, BucketingParams
from phalanx.aggregation.pre.clipping import Clipping, ClippingParams
from phalanx.aggregation.pre.nnm import NNM
from phalanx.aggregation.trimmed_mean import TrimmedMean, TrimmedMeanParams
from phalanx.config import AggregationConfig, StepConfig
from phalanx.core.named import Params, lookup, parse_params

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    params: type[Params]
    build: Callable[[Any], T]  # a Part subclass


RULES: dict[str, Entry[Rule]] = {
    "bulyan": Entry(Params, Bulyan),
    "centered_clipping": Entry(CenteredClippingParams, CenteredClipping),
    "fedavg": Entry(Params, Mean),
    "geometric_median": Entry(GeometricMedianParams, GeometricMedian),
    "krum": Entry(Params, Krum),
    "median": Entry(Params, Median),
    "multi_krum": Entry(MultiKrumParams, MultiKrum),
    "trimmed_mean": Entry(TrimmedMeanParams, TrimmedMean),
}

STEPS: dict[str, Entry[Step]] = {
    "bucketing": Entry(BucketingParams, Bucketing),
    "clipping": Entry(ClippingParams, Clipping),
    "nnm": Entry(Params, NNM),
}

AGGREGATORS = RULES  # the names valid as ``aggregation.name``


def _build(kind: str, table: Mapping[str, Entry[T]], name: str, params: Mapping[str, Any]) -> T:
    entry = lookup(kind, name, table)
    return entry.build(parse_params(kind, name, entry.params, params))


def max_f(rule: str, n: int) -> int | None:
    """The largest f the rule ``rule`` tolerates among n rows; None when it takes no f."""
    part = lookup("aggregator", rule, RULES).build
    assert isinstance(part, type) and issubclass(part, Part), part
    return part.max_f(n)


def build_step(config: StepConfig) -> Step:
    return _build("pre-aggregation step", STEPS, config.name, config.params)


def build_aggregator(config: AggregationConfig | str) -> Aggregator:
    """The aggregator ``config`` describes (a bare name: that rule, default parameters)."""
    if isinstance(config, str):
        config = AggregationConfig(name=config)
    rule = _build("aggregator", RULES, config.name, config.params)
    steps = [build_step(step) for step in config.pre]
    if config.name == "fedavg" and not steps:
        return FedAvg()
    return Pipeline(rule, f=config.f, steps=steps)
