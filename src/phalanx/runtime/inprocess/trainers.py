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

from phalanx.client.sdk import UserTrainFn, preload_lazy_imports, total_steps
from phalanx.config import RunConfig, TrainingConfig
from phalanx.core.messages import TaskKey
from phalanx.core.rng import torch_rng
from phalanx.core.tensors import Manifest, unflatten
from phalanx.runtime.inprocess.user_training import worker_train_fn
from phalanx.runtime.inprocess.workers import WorkerJob, WorkerOutcome, WorkerPool
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


class WorkerTrainer:
    """A user's ``train(model, data, ctx)`` per client, on a pool of forked workers.

    One long-lived pool serves every round (forking per round would cost more than a small
    model's training); it starts on the first ``train`` and ``close`` ends it. A closed
    trainer starts a fresh pool when next used, so one ``Simulation`` can run again.
    A job that exceeds ``simulation.hang_guard_s`` of wall-clock time comes back as a
    "hang: ..." outcome (a timeout to the engine); one whose function raised ("error: ...") or
    whose worker died ("crash: ...") becomes a crash.
    """

    def __init__(
        self,
        model: nn.Module,
        manifest: Manifest,
        clients: Sequence[ClientData],
        train_fn: UserTrainFn,
        config: RunConfig,
    ) -> None:
        self._manifest = manifest
        self._sizes = [len(client) for client in clients]
        self._training = config.training
        self._sim = config.simulation
        self._fn = worker_train_fn(
            model, list(clients), train_fn, config.training, seed=config.seed
        )
        self._pool: WorkerPool | None = None
        self._jobs = 0  # ids for the pool's jobs, unique over this trainer's life

    def total_steps(self, client: int) -> int:
        return total_steps(self._sizes[client], self._training)

    def num_examples(self, client: int) -> int:
        return self._sizes[client]

    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        # Own contiguous copies: unflatten gives views of one vector, and the pipe wants
        # standalone tensors.
        tensors = {k: v.clone() for k, v in unflatten(params, self._manifest).items()}
        requests = [self._request(job, tensors) for job in jobs]
        return [
            self._outcome(out, job)
            for out, job in zip(self._open().run(requests), jobs, strict=True)
        ]

    def close(self) -> None:
        """Stop the workers (idempotent); the next ``train`` starts new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> WorkerTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> WorkerPool:
        if self._pool is None:
            preload_lazy_imports()  # once per process, before the first fork
            self._pool = WorkerPool(
                self._fn,
                workers=self._sim.workers,
                threads_per_worker=self._sim.threads_per_worker,
                hang_guard_s=self._sim.hang_guard_s,
            )
        return self._pool

    def _request(self, job: TrainJob, tensors: dict[str, torch.Tensor]) -> WorkerJob:
        key = job.key
        meta = {
            "round": key.round,
            "attempt": key.attempt,
            "max_steps": job.step_limit,
            "total_steps": self.total_steps(key.client),
        }
        self._jobs += 1
        return WorkerJob(self._jobs, key.client, tensors, meta)

    def _outcome(self, out: WorkerOutcome, job: TrainJob) -> TrainOutcome:
        examples = self.num_examples(job.key.client)
        return TrainOutcome(out.tensors, examples, dict(out.metrics), out.error)
