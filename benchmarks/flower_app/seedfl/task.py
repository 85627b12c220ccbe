"""The seed workload's model, data and training, as phalanx runs them.

The data are the very examples phalanx generates for the seed scenario: the benchmark
exports them from phalanx (one ``.npz`` of plain arrays, read with ``allow_pickle=False``),
since this environment cannot import phalanx. Training is phalanx's: SGD without momentum,
``local_epochs`` passes over a fresh permutation in batches of ``batch_size``, cross-entropy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)  # one thread per process, as every phalanx process


def mlp(features: int, hidden: int, classes: int) -> nn.Sequential:
    """phalanx's seed model, the same layer names: features -> hidden -> ReLU -> classes."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def load(path: str) -> dict[str, np.ndarray]:
    """Every array of the exported workload (plain arrays only, never pickles)."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def model_for(data: dict[str, np.ndarray]) -> nn.Sequential:
    """The model with phalanx's initial parameters for this run (exported with the data)."""
    model = mlp(int(data["features"]), int(data["hidden"]), int(data["classes"]))
    state = {
        name[len("init/") :]: torch.from_numpy(data[name])
        for name in data
        if name.startswith("init/")
    }
    model.load_state_dict(state)
    return model


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> float:
    """Local SGD; returns the last epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), batch):
            chosen = order[start : start + batch]
            optimiser.zero_grad()
            loss = loss_fn(model(x[chosen]), y[chosen])
            loss.backward()
            optimiser.step()
            total += float(loss) * len(chosen)
    return total / len(y)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())
