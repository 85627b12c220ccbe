"""Built-in workloads, resolved by name through one ``Registry``
(``phalanx.core.named``).

A workload is data plus a model factory (see ``base``); the engine and runtimes never know
which one they run. An unknown name is a ``ConfigError`` listing the valid ones, raised
before any data is generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from phalanx.config import WorkloadConfig
from phalanx.core.named import Params, Registry, no_params
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

# Parameters are checked by the config's discriminated union, not here: a builder takes no
# registry parameters.
WORKLOADS: Registry[WorkloadBuilder, Params] = Registry("workload", params_of=no_params)
for _name, _builder, _text in (
    ("digits", build_digits, "scikit-learn's 8x8 digits, split by Dirichlet(alpha) labels"),
    ("fashion_mnist", build_fashion_mnist, "Fashion-MNIST from Debian's IDX files"),
    ("seed", build_seed, "the seed tutorial's synthetic task, MLP 32-64-10"),
    ("synthetic", build_synthetic, "FedProx's Synthetic(alpha, beta), heterogeneous clients"),
):
    WORKLOADS.register(_name, _builder, description=_text)


def workload_builder(name: str) -> WorkloadBuilder:
    """The builder registered under ``name`` (``ConfigError`` listing the valid names)."""
    return WORKLOADS.lookup(name)


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
