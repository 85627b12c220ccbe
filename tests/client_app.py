"""A user's client app as ``phalanx client --app tests.client_app:APP`` loads it: a model
factory, every client's data and a training function, as ``Simulation`` takes them."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from phalanx.client import TrainContext
from phalanx.runtime.grpc.client import ClientApp
from phalanx.workloads.base import ClientData


def model() -> nn.Module:
    return nn.Linear(8, 3)


def train(net: nn.Module, data: ClientData, ctx: TrainContext) -> Mapping[str, float]:
    optimiser = torch.optim.SGD(net.parameters(), lr=ctx.config.lr)
    steps = 0
    for _ in range(ctx.config.local_epochs):
        for batch in torch.randperm(len(data), generator=ctx.generator).split(
            ctx.config.batch_size
        ):
            if steps == ctx.max_steps:
                break
            loss = nn.functional.cross_entropy(net(data.x[batch]), data.y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
    return {"loss": float(loss), "steps": steps}


def make() -> ClientApp:
    """The app, built only in the process that asks for it."""
    generator = torch.Generator().manual_seed(0)
    clients = [
        ClientData(torch.randn(12, 8, generator=generator), torch.randint(0, 3, (12,)))
        for _ in range(4)
    ]
    return ClientApp(model, clients, train)


APP = make()
NOT_AN_APP = {"model": model}
