"""How the simulation computes a client's new weights.

``BatchedTrainer`` trains many clients of the built-in SGD recipe in one stacked pass (or
one at a time when batching is off); ``WorkerTrainer`` runs a user's own training function
per client in worker processes guarded by a real wall-clock limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from phalanx.config import TrainingConfig
from phalanx.core.messages import TaskKey
from phalanx.core.rng import torch_rng
from phalanx.core.tensors import Manifest, unflatten
from phalanx.training.batched import BatchedSGD, ClientBatch
from phalanx.workloads.base import ClientData


@dataclass(frozen=True)
class TrainJob:
    key: TaskKey
    step_limit: int  # local steps this client will take (partial work if below total)


@dataclass(frozen=True)
class TrainOutcome:
    """New weights by name, or the reason there are none ("hang: ..." / "crash: ...")."""

    tensors: dict[str, torch.Tensor] | None
    num_examples: int
    metrics: dict[str, float]
    error: str | None = None


class LocalTrainer(Protocol):
    def total_steps(self, client: int) -> int: ...
    def num_examples(self, client: int) -> int: ...
    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]: ...


class PaddedClients:
    """Every client's data padded to one length, so a round's clients gather in one index."""

    def __init__(self, clients: Sequence[ClientData]) -> None:
        n_max = max(len(c) for c in clients)
        feature_shape = tuple(clients[0].x.shape[1:])
        self.x = torch.zeros(len(clients), n_max, *feature_shape)
        self.y = torch.zeros(len(clients), n_max, dtype=torch.long)
        self.n = torch.tensor([len(c) for c in clients])
        for i, client in enumerate(clients):
            self.x[i, : len(client)] = client.x
            self.y[i, : len(client)] = client.y

    def select(self, ids: Sequence[int]) -> ClientBatch:
        index = torch.tensor(list(ids))
        n = self.n[index]
        width = int(n.max())
        return ClientBatch(self.x[index, :width], self.y[index, :width], n)


class BatchedTrainer:
    def __init__(
        self,
        model: nn.Module,
        manifest: Manifest,
        clients: Sequence[ClientData],
        config: TrainingConfig,
        *,
        seed: int,
        batched: bool = True,
    ) -> None:
        self._sgd = BatchedSGD(model, manifest, config)
        self._manifest = manifest
        self._data = PaddedClients(clients)
        self._steps = self._sgd.steps_per_client(self._data.n)
        self._seed = seed
        self._batched = batched

    def total_steps(self, client: int) -> int:
        return int(self._steps[client])

    def num_examples(self, client: int) -> int:
        return int(self._data.n[client])

    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        if not self._batched:
            return [out for job in jobs for out in self._train_group(params, [job])]
        return self._train_group(params, jobs)

    def _train_group(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        ids = [job.key.client for job in jobs]
        generators = [
            torch_rng(self._seed, "data", j.key.round, j.key.client, j.key.attempt) for j in jobs
        ]
        limits = torch.tensor([job.step_limit for job in jobs])
        flat, loss, _ = self._sgd.train(params, self._data.select(ids), limits, generators)
        return [
            TrainOutcome(
                unflatten(flat[i], self._manifest), self.num_examples(cid), {"loss": float(loss[i])}
            )
            for i, cid in enumerate(ids)
        ]
