"""Your own model and your own training loop, run per client in worker processes.

A small CNN with dropout is not something the batched fast path can train, so the run gives
``train=``: each attempt runs in a forked worker, on a copy of the model already loaded with
the global weights, and is killed if it outlasts ``simulation.hang_guard_s`` real seconds.

Run: .venv/bin/python examples/custom_model.py
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from phalanx.client import TrainContext
from phalanx.config import (
    DigitsWorkload,
    FaultConfig,
    FaultRule,
    PartialWorkConfig,
    QuorumConfig,
    RunConfig,
    ScheduledFault,
    SelectionConfig,
    TrainingConfig,
)
from phalanx.simulation import Simulation
from phalanx.types import FaultKind
from phalanx.workloads import build_workload
from phalanx.workloads.base import ClientData


def cnn() -> nn.Module:
    """8x8 digits arrive as 64 flat pixels: unflatten, one conv block, dropout, classify."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 4 * 4, 10),
    )  # fmt: skip


def train(model: nn.Module, data: ClientData, ctx: TrainContext) -> dict[str, float]:
    """SGD with momentum; shuffles from ctx.generator and stops at ctx.max_steps."""
    optimiser = torch.optim.SGD(model.parameters(), lr=ctx.config.lr, momentum=0.9)
    steps, total = 0, 0.0
    for _ in range(ctx.config.local_epochs):
        order = torch.randperm(len(data), generator=ctx.generator)
        for batch in order.split(ctx.config.batch_size):
            if steps == ctx.max_steps:  # a straggler submits the work it finished
                break
            loss = nn.functional.cross_entropy(model(data.x[batch]), data.y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps, total = steps + 1, total + loss.item()
    return {"loss": total / max(steps, 1), "steps": steps}


def main() -> None:
    torch.set_num_threads(1)  # one thread here; each worker gets simulation.threads_per_worker
    config = RunConfig(
        name="custom-cnn",
        rounds=20,
        workload=DigitsWorkload(num_clients=10),
        training=TrainingConfig(local_epochs=2, batch_size=16, lr=0.05),
        selection=SelectionConfig(clients_per_round=5),
        quorum=QuorumConfig(min_updates=3),
        partial_work=PartialWorkConfig(enabled=True),
        faults=FaultConfig(
            rules=(  # the first rule that covers a client decides for it
                FaultRule(clients=(0, 1), rate=0.3, kinds=(FaultKind.CORRUPT,)),
                FaultRule(rate=0.15, kinds=(FaultKind.CRASH, FaultKind.STRAGGLE)),
            ),
            schedule=(ScheduledFault(round=2, client=3, kind=FaultKind.HANG),),
        ),
    )
    digits = build_workload(config.workload, config.seed)  # 10 non-IID clients of 8x8 digits
    simulation = Simulation(
        config, model=cnn, clients=digits.clients, test=digits.test, train=train
    )
    result = simulation.run()
    last = result.history[-1]
    print(f"accuracy {last['metrics']['accuracy']:.3f} after {result.state.model_version} commits")
    print("faults injected:", result.faults_fired)
    seen: Counter[str] = Counter()
    for record in result.history:
        seen.update(record["failures"])  # what the engine observed, per failure kind
    print("failures seen:", dict(seen))


if __name__ == "__main__":
    main()
