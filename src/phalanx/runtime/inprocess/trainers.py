"""How the simulation computes a client's new weights.

``BatchedTrainer`` trains many clients of the built-in SGD recipe in one stacked pass (or
one at a time when batching is off); ``WorkerTrainer`` runs a user's own training function
per client in worker processes (or, with ``simulation.workers = 0``, in this process)
guarded by a real wall-clock limit. A trainer that can ``start`` jobs and hand their
outcomes over one at a time (``StartingTrainer``) lets the simulation use the first result
while the rest are still training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from phalanx.client.sdk import UserTrainFn, preload_lazy_imports, total_steps
from phalanx.config import RunConfig, TrainingConfig
from phalanx.core.messages import TaskKey
from phalanx.core.rng import torch_rng
from phalanx.core.tensors import Manifest, unflatten
from phalanx.engine.heap import settle_long_lived
from phalanx.runtime.inprocess.inline import InlinePool
from phalanx.runtime.inprocess.user_training import worker_train_fn
from phalanx.runtime.inprocess.workers import WorkerJob, WorkerPool
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


@runtime_checkable
class WidthBounded(Protocol):
    """A trainer whose batches are bounded by memory: at most ``max_batch`` jobs at once."""

    @property
    def max_batch(self) -> int: ...


class StartedJob(Protocol):
    """A job under way: ``result`` waits for its outcome; ``discard`` says it is not wanted."""

    def result(self) -> TrainOutcome: ...
    def discard(self) -> None: ...


@runtime_checkable
class StartingTrainer(LocalTrainer, Protocol):
    def start(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[StartedJob]: ...


class PaddedClients:
    """Every client's data padded to one length, so a round's clients gather in one index.

    Clients that already are consecutive equal-length blocks of one float32 / int64 buffer
    (the seed workload's) are used as they lie, so their data is held once; any others are
    copied into a zero-padded buffer.
    """

    def __init__(self, clients: Sequence[ClientData]) -> None:
        self.n = torch.tensor([len(c) for c in clients])
        rows = _rows(clients)
        if rows is not None:
            self.x, self.y = rows
            return
        n_max = int(self.n.max())
        feature_shape = tuple(clients[0].x.shape[1:])
        self.x = torch.zeros(len(clients), n_max, *feature_shape)
        self.y = torch.zeros(len(clients), n_max, dtype=torch.long)
        for i, client in enumerate(clients):
            self.x[i, : len(client)] = client.x
            self.y[i, : len(client)] = client.y

    def select(self, ids: Sequence[int]) -> ClientBatch:
        index = torch.tensor(list(ids))
        n = self.n[index]
        width = int(n.max())
        return ClientBatch(self.x[index, :width], self.y[index, :width], n)


def _block(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor | None:
    """``tensors`` stacked without a copy, if they are consecutive blocks of one storage."""
    first = tensors[0]
    step = first.numel() * first.element_size()
    for i, t in enumerate(tensors):
        if t.dtype != dtype or t.shape != first.shape or not t.is_contiguous():
            return None
        if t.untyped_storage().data_ptr() != first.untyped_storage().data_ptr():
            return None
        if t.data_ptr() != first.data_ptr() + i * step:
            return None
    size, stride = (len(tensors), *first.shape), (first.numel(), *first.stride())
    stacked = torch.empty(0, dtype=dtype)
    stacked.set_(first.untyped_storage(), first.storage_offset(), size, stride)
    return stacked


def _rows(clients: Sequence[ClientData]) -> tuple[torch.Tensor, torch.Tensor] | None:
    x = _block([c.x for c in clients], torch.float32)
    y = _block([c.y for c in clients], torch.long)
    return None if x is None or y is None else (x, y)


class BatchedTrainer:
    """The built-in SGD recipe for many clients at once (``BatchedSGD``), or one at a time.

    ``max_batch`` is how many clients the simulation should hand it at once: one when
    batching is off (each trained update would otherwise wait for the rest), else as many
    as ``max_batch_bytes`` holds by ``BatchedSGD.bytes_per_client``. A client's result does
    not depend on the batch it trained in, so the bound changes memory, never results.
    """

    def __init__(
        self,
        model: nn.Module,
        manifest: Manifest,
        clients: Sequence[ClientData],
        config: TrainingConfig,
        *,
        seed: int,
        batched: bool = True,
        max_batch_bytes: int | None = None,
    ) -> None:
        self._sgd = BatchedSGD(model, manifest, config)
        self._manifest = manifest
        self._data = PaddedClients(clients)
        self._steps = self._sgd.steps_per_client(self._data.n)
        self._seed = seed
        self._batched = batched
        self.max_batch = 1 if not batched else len(clients)
        if batched and max_batch_bytes is not None:
            n_max = int(self._data.n.max())
            share = self._sgd.bytes_per_client(self._data.x[0, 0], n_max)
            self.max_batch = max(1, min(len(clients), max_batch_bytes // share))

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


@dataclass(frozen=True)
class _PoolJob:
    """A ``WorkerTrainer`` job in its pool."""

    trainer: WorkerTrainer
    pool: WorkerPool | InlinePool
    job: TrainJob
    job_id: int

    def result(self) -> TrainOutcome:
        out = self.pool.result(self.job_id)
        examples = self.trainer.num_examples(self.job.key.client)
        return TrainOutcome(out.tensors, examples, dict(out.metrics), out.error)

    def discard(self) -> None:
        self.pool.forget(self.job_id)


class WorkerTrainer:
    """A user's ``train(model, data, ctx)`` per client, on a pool of forked workers.

    One long-lived pool serves every round (forking per round would cost more than a small
    model's training); it starts on the first ``train`` and ``close`` ends it. A closed
    trainer starts a fresh pool when next used, so one ``Simulation`` can run again.
    With ``simulation.workers = 0`` the pool is this process (``InlinePool``: no crash
    isolation, a SIGALRM hang guard, main thread only).
    A job that exceeds ``simulation.hang_guard_s`` of wall-clock time comes back as a
    "hang: ..." outcome (a timeout to the engine); one whose function raised ("error: ...") or
    whose worker died ("crash: ...") becomes a crash. What the first job would import lazily
    is imported when the trainer is built, before any fork and before the first round.
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
        self._pool: WorkerPool | InlinePool | None = None
        self._jobs = 0  # ids for the pool's jobs, unique over this trainer's life
        preload_lazy_imports()  # once per process, before the first fork

    def total_steps(self, client: int) -> int:
        return total_steps(self._sizes[client], self._training)

    def num_examples(self, client: int) -> int:
        return self._sizes[client]

    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        return [started.result() for started in self.start(params, jobs)]

    def start(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[StartedJob]:
        """Queue ``jobs`` on the pool; each result is taken when asked for."""
        # Own contiguous copies: unflatten gives views of one vector, and the pipe wants
        # standalone tensors.
        tensors = {k: v.clone() for k, v in unflatten(params, self._manifest).items()}
        requests = [self._request(job, tensors) for job in jobs]
        pool = self._open()
        pool.submit(requests)
        return [
            _PoolJob(self, pool, job, request.job_id)
            for job, request in zip(jobs, requests, strict=True)
        ]

    def prepare(self) -> None:
        """Set up before the first round: settle the long-lived heap, then fork the workers.

        Settling (``engine.heap``: one full collection, then ``gc.freeze``; once per
        process) would otherwise happen in the first round, on the run's clock (0.2 s with
        torch and scikit-learn loaded). Done before the fork, every worker also inherits the
        frozen heap: its collections walk only what its jobs allocate, never the hundreds of
        thousands of objects inherited from the parent.
        """
        settle_long_lived()
        pool = self._open()
        if isinstance(pool, WorkerPool):
            pool.start()

    def close(self) -> None:
        """Stop the workers (idempotent); the next ``train`` starts new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> WorkerTrainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> WorkerPool | InlinePool:
        if self._pool is None:
            if self._sim.workers == 0:
                self._pool = InlinePool(self._fn, hang_guard_s=self._sim.hang_guard_s)
            else:
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
        # Its cost, for balancing workers' shares: its steps, and one step's worth for what
        # every attempt pays besides (a reload, an optimiser, the reply).
        return WorkerJob(self._jobs, key.client, tensors, meta, cost=job.step_limit + 1.0)
