"""phalanx's side of every benchmarked rule: the aggregation configuration that matches the
peers' versions in ``rules.py`` (same f, same iterations, same radius). Imported only by the
measuring child that runs in phalanx's environment; the peers' child never imports phalanx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.aggregators.rules import BUCKET_SIZE, CC_ITERATIONS, GM_ITERATIONS, GM_NU, Inputs
from phalanx.config import AggregationConfig, StepConfig

Config = Callable[[Inputs], AggregationConfig]


def _config(name: str, *steps: StepConfig, **params: Any) -> Config:
    return lambda i: AggregationConfig(name=name, f=i.f, params=params, pre=steps)


OURS: dict[str, Config] = {
    "fedavg": _config("fedavg"),
    "median": _config("median"),
    "trimmed_mean": _config("trimmed_mean"),
    "krum": _config("krum"),
    "multi_krum": _config("multi_krum"),
    "bulyan": _config("bulyan"),
    "geometric_median": _config("geometric_median", nu=GM_NU, max_iter=GM_ITERATIONS, tol=0.0),
    "centered_clipping": lambda i: AggregationConfig(
        name="centered_clipping",
        f=i.f,
        params={"tau": i.radius, "iterations": CC_ITERATIONS, "momentum": False},
    ),
    "nnm > mean": _config("fedavg", StepConfig(name="nnm")),
    "clipping (static) > mean": lambda i: AggregationConfig(
        name="fedavg",
        pre=(StepConfig(name="clipping", params={"mode": "static", "threshold": i.radius}),),
    ),
    "clipping (ARC) > mean": _config(
        "fedavg", StepConfig(name="clipping", params={"mode": "adaptive"})
    ),
    "bucketing > mean": _config(
        "fedavg", StepConfig(name="bucketing", params={"size": BUCKET_SIZE})
    ),
}
