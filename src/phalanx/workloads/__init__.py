"""Built-in workloads, resolved by name through one explicit registry.

A workload is data plus a model factory (see ``base``); the engine and runtimes never know
which one they run. An unknown name is a ``ConfigError`` listing the valid ones, raised
before any data is generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from phalanx.config import WorkloadConfig
from phalanx.errors import ConfigError
from phalanx.workloads.base import ClientData, Workload
from phalanx.workloads.digits import build_digits
from phalanx.workloads.fashion_mnist import build_fashion_mnist
from phalanx.workloads.models import mlp
from phalanx.workloads.seed import build_seed
from phalanx.workloads.synthetic import build_synthetic

# Each builder takes its own config model; the key is that model's ``name`` literal, so the
# pydantic discriminator guarantees the builder gets the model it expects.
WorkloadBuilder = Callable[[Any, int], Workload]

WORKLOADS: dict[str, WorkloadBuilder] = {
    "digits": build_digits,
    "fashion_mnist": build_fashion_mnist,
    "seed": build_seed,
    "synthetic": build_synthetic,
}


def workload_builder(name: str) -> WorkloadBuilder:
    """The builder registered under ``name``."""
    try:
        return WORKLOADS[name]
    except KeyError:
        valid = ", ".join(sorted(WORKLOADS))
        raise ConfigError(f"unknown workload {name!r}; valid: {valid}") from None


def build_workload(config: WorkloadConfig, seed: int) -> Workload:
    """Data and model factory of ``config``, deterministic in ``seed``."""
    if config.name == "custom":
        raise ConfigError(
            "workload 'custom' has no built-in data: pass model= and clients= to Simulation"
        )
    return workload_builder(config.name)(config, seed)


__all__ = [
    "WORKLOADS",
    "ClientData",
    "Workload",
    "WorkloadBuilder",
    "build_workload",
    "mlp",
    "workload_builder",
]
