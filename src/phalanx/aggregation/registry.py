"""Aggregators by name: a rule from ``RULES`` behind steps from ``STEPS``, each with its own
parameter model, in two ``Registry``s (``phalanx.core.named``). Unknown names or parameters
are errors listing the valid ones; ``RULES.register(name, cls, params=...)`` adds a rule.

``fedavg`` alone is the streaming ``FedAvg`` (O(d) memory); every other combination holds
the round's n x d stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from phalanx.aggregation.base import Aggregator
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
from phalanx.aggregation.pre.dnc import Dnc, DncParams
from phalanx.aggregation.pre.flame import Flame, FlameParams
from phalanx.aggregation.pre.foolsgold import FoolsGold, FoolsGoldParams
from phalanx.aggregation.pre.nnm import NNM
from phalanx.aggregation.pre.persistent_flags import PersistentFlags, PersistentFlagsParams
from phalanx.aggregation.pre.winsorise import Winsorise, WinsoriseParams
from phalanx.aggregation.trimmed_mean import TrimmedMean, TrimmedMeanParams
from phalanx.config import AggregationConfig, StepConfig
from phalanx.core.named import Params, Registry, no_params

R = TypeVar("R", covariant=True)


class PartClass(Protocol[R]):
    """A rule or step class as the registry holds it: built from its checked parameters,
    and able to say what f it tolerates among n rows before any instance exists."""

    def __call__(self, params: Any) -> R: ...
    def max_f(self, n: int) -> int | None: ...


RULES: Registry[PartClass[Rule], Params] = Registry("aggregator", params_of=no_params)
STEPS: Registry[PartClass[Step], Params] = Registry("pre-aggregation step", params_of=no_params)
AGGREGATORS = RULES  # the names valid as ``aggregation.name``

for _name, _rule, _params, _text in (
    ("bulyan", Bulyan, Params, "Krum selection, then a trimmed mean around the median"),
    ("centered_clipping", CenteredClipping, CenteredClippingParams,
     "iterative clipping around a centre carried from round to round"),
    ("fedavg", Mean, Params, "the weighted mean (streaming FedAvg when no step precedes it)"),
    ("geometric_median", GeometricMedian, GeometricMedianParams,
     "the point closest to all updates in summed distance (Weiszfeld)"),
    ("krum", Krum, Params, "the one update closest to its n - f - 2 neighbours"),
    ("median", Median, Params, "the coordinate-wise median"),
    ("multi_krum", MultiKrum, MultiKrumParams, "the mean of the m best-scored updates"),
    ("trimmed_mean", TrimmedMean, TrimmedMeanParams,
     "the coordinate-wise mean without the f largest and f smallest values"),
):  # fmt: skip
    RULES.register(_name, _rule, params=_params, description=_text)

for _name, _step, _params, _text in (
    ("bucketing", Bucketing, BucketingParams, "means of random buckets of updates"),
    ("clipping", Clipping, ClippingParams, "scale updates down to a static or adaptive norm"),
    ("dnc", Dnc, DncParams,
     "drop the f updates furthest out along the main axis of spread (DnC; backdoors)"),
    ("flame", Flame, FlameParams,
     "admit the majority cosine cluster, clip to the median norm, noise (backdoors)"),
    ("foolsgold", FoolsGold, FoolsGoldParams,
     "weigh down clients whose summed updates look alike (sybils, backdoors)"),
    ("nnm", NNM, Params, "replace each update by the mean of its n - f nearest neighbours"),
    ("persistent_flags", PersistentFlags, PersistentFlagsParams,
     "flag clients whose alignment stays below the population's (CUSUM over rounds)"),
    ("winsorise", Winsorise, WinsoriseParams,
     "clamp each coordinate's f extreme values at each end to the nearest left (backdoors)"),
):  # fmt: skip
    STEPS.register(_name, _step, params=_params, description=_text)


def _build(registry: Registry[PartClass[R], Params], name: str, params: Mapping[str, Any]) -> R:
    return registry.lookup(name)(registry.parse(name, params))


def max_f(rule: str, n: int) -> int | None:
    """The largest f the rule ``rule`` tolerates among n rows; None when it takes no f."""
    return RULES.lookup(rule).max_f(n)


def build_step(config: StepConfig) -> Step:
    return _build(STEPS, config.name, config.params)


def build_aggregator(config: AggregationConfig | str) -> Aggregator:
    """The aggregator ``config`` describes (a bare name: that rule, default parameters)."""
    if isinstance(config, str):
        config = AggregationConfig(name=config)
    rule = _build(RULES, config.name, config.params)
    steps = [build_step(step) for step in config.pre]
    if config.name == "fedavg" and not steps:
        return FedAvg()
    return Pipeline(rule, f=config.f, steps=steps)
