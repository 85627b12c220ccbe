"""The seed tutorial's task: Gaussian features with one feature shifted by the class.

Feature ``y % features`` of a class-``y`` example has its mean moved by ``shift``, so the task
is learnable by a linear model yet noisy enough that accuracy grows over rounds. Each client
draws from its own stream, so adding clients never changes the existing clients' data.
"""

from __future__ import annotations

import functools

import torch

from phalanx.config import SeedWorkload
from phalanx.core.rng import torch_rng
from phalanx.workloads.base import ClientData, Workload
from phalanx.workloads.models import mlp


def shifted_gaussians(
    generator: torch.Generator, n: int, features: int, classes: int, shift: float
) -> ClientData:
    """``n`` examples of the seed task drawn from ``generator``."""
    x = torch.randn(n, features, generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    x[torch.arange(n), y % features] += shift
    return ClientData(x.contiguous(), y.contiguous())


def build_seed(config: SeedWorkload, seed: int) -> Workload:
    """The seed workload: client ``i`` from stream ("workload.seed", i), the test set from
    "workload.seed.test"."""

    def draw(generator: torch.Generator, n: int) -> ClientData:
        return shifted_gaussians(generator, n, config.features, config.classes, config.shift)

    clients = tuple(
        draw(torch_rng(seed, "workload.seed", i), config.samples_per_client)
        for i in range(config.num_clients)
    )
    test = draw(torch_rng(seed, "workload.seed.test"), config.test_samples)
    return Workload(
        name=config.name,
        clients=clients,
        test=test,
        make_model=functools.partial(mlp, config.features, config.hidden, config.classes),
        num_classes=config.classes,
    )
