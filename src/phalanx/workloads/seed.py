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
    generator: torch.Generator,
    n: int,
    features: int,
    classes: int,
    shift: float,
    *,
    out: ClientData | None = None,
) -> ClientData:
    """``n`` examples of the seed task drawn from ``generator`` (into ``out`` if given)."""
    out = out or ClientData(torch.empty(n, features), torch.empty(n, dtype=torch.long))
    torch.randn(n, features, generator=generator, out=out.x)
    torch.randint(0, classes, (n,), generator=generator, out=out.y)
    out.x[torch.arange(n), out.y % features] += shift
    return out


def build_seed(config: SeedWorkload, seed: int) -> Workload:
    """The seed workload: client ``i`` from stream ("workload.seed", i), the test set from
    "workload.seed.test". The clients are the rows of one buffer, which the batched trainer
    uses as it is instead of padding a copy (``PaddedClients``)."""

    def draw(generator: torch.Generator, n: int, out: ClientData | None = None) -> ClientData:
        return shifted_gaussians(
            generator, n, config.features, config.classes, config.shift, out=out
        )

    n, shape = config.samples_per_client, (config.num_clients, config.samples_per_client)
    rows = ClientData(
        torch.empty(*shape, config.features).flatten(0, 1),
        torch.empty(shape, dtype=torch.long).flatten(),
    )
    clients = tuple(
        draw(
            torch_rng(seed, "workload.seed", i),
            n,
            ClientData(rows.x[i * n : (i + 1) * n], rows.y[i * n : (i + 1) * n]),
        )
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
