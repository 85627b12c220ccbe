"""What this client trains, built exactly as the simulation builds it for the same id.

A built-in workload (``--scenario``) is built whole from the scenario's seed and this
client's shard taken by id: the simulation partitions the very same way, so client 3 of a
deployment holds client 3's examples of the simulation. It trains with the built-in SGD
recipe (``BatchedTrainer``, one client at a time: a client's result does not depend on its
batch). A user's app (``--app``) trains its own function through the client SDK, exactly as
a simulation worker does. A Byzantine client of a data-poisoning attack trains on poisoned
data, poisoned as the simulation poisons it.

Either way the result is a ``Trainer`` for the client package's ``HonestClient``: the
task's own training settings (epochs, batch size, learning rate, step budget) rule, and
the steps to take come from the partial-work decision the caller made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from phalanx.client.payload import Trained
from phalanx.client.reload import ReloadedCopy
from phalanx.client.sdk import (
    context_for,
    preload_lazy_imports,
    run_user_training,
    total_steps,
)
from phalanx.config import RunConfig, TrainingConfig
from phalanx.core.messages import TaskConfig, TrainTask
from phalanx.core.models import PublishedModel
from phalanx.core.rng import derive_seed
from phalanx.core.tensors import Manifest
from phalanx.errors import ConfigError
from phalanx.faults.byzantine import build_attack, byzantine_clients
from phalanx.faults.poisoning import DataAttack, infer_data_shape, poison_clients
from phalanx.runtime.grpc.client.app import ClientApp
from phalanx.runtime.inprocess.trainers import BatchedTrainer, TrainJob
from phalanx.workloads import build_workload
from phalanx.workloads.base import ClientData

Train = Callable[[TrainTask, PublishedModel, int], Trained]  # (task, model, steps)


@dataclass(frozen=True)
class Shard:
    """One client's share of a run: its config (seed, faults), the template model, its data
    and how it trains. ``population`` is the number of clients the run partitions into."""

    client: int
    config: RunConfig
    template: nn.Module
    manifest: Manifest
    data: ClientData
    population: int
    train: Train

    def total_steps(self, config: TaskConfig) -> int:
        return total_steps(len(self.data), config, config.max_steps)


def training_of(config: TaskConfig) -> TrainingConfig:
    return TrainingConfig(
        local_epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr
    )


def template_of(make_model: Callable[[], nn.Module], seed: int) -> tuple[nn.Module, Manifest]:
    """The model's shape (its weights come from the coordinator), built without touching
    the global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = make_model()
    return model, Manifest.of({n: p.detach() for n, p in model.named_parameters()})


def _check_id(client: int, clients: Sequence[ClientData], where: str) -> None:
    if not 0 <= client < len(clients):
        raise ConfigError(f"--id {client} is not a client of {where} (ids 0..{len(clients) - 1})")


def poisoned(
    config: RunConfig,
    clients: Sequence[ClientData],
    shape: tuple[int, tuple[int, int] | None],
    *,
    byzantine: bool,
) -> list[ClientData]:
    """``clients`` as trained: a data attack's Byzantine clients poisoned (when this process
    plays its Byzantine part), as ``Simulation`` poisons them."""
    attack = build_attack(config.faults.byzantine)
    chosen = byzantine_clients(config.faults.byzantine, len(clients), config.seed)
    if not byzantine or not isinstance(attack, DataAttack) or not chosen:
        return list(clients)
    num_classes, image_shape = shape
    return poison_clients(
        clients, chosen, attack.resolve(clients, chosen), num_classes=num_classes,
        image_shape=image_shape, seed=config.seed,
    )  # fmt: skip


def builtin_shard(config: RunConfig, client: int, *, byzantine: bool) -> Shard:
    workload = build_workload(config.workload, config.seed)
    _check_id(client, workload.clients, f"scenario {config.name!r}")
    template, manifest = template_of(workload.make_model, config.seed)
    shape = (workload.num_classes, workload.image_shape)
    clients = poisoned(config, workload.clients, shape, byzantine=byzantine)
    trainers: dict[TrainingConfig, BatchedTrainer] = {}

    def train(task: TrainTask, model: PublishedModel, steps: int) -> Trained:
        settings = training_of(task.config)
        if settings not in trainers:
            trainers[settings] = BatchedTrainer(
                template, manifest, clients, settings, seed=config.seed, batched=False
            )
        out = trainers[settings].train(model.params, [TrainJob(task.key, steps)])[0]
        if out.tensors is None:
            raise RuntimeError(out.error or "the built-in trainer returned nothing")
        total = total_steps(len(clients[client]), task.config, task.config.max_steps)
        return Trained(out.tensors, out.num_examples, steps, total, out.metrics)

    size = len(clients)
    return Shard(client, config, template, manifest, clients[client], size, train)


def app_shard(app: ClientApp, config: RunConfig, client: int, *, byzantine: bool) -> Shard:
    _check_id(client, app.clients, "the app's clients")
    config = config.for_clients(len(app.clients))
    template, manifest = template_of(app.model, config.seed)
    preload_lazy_imports()  # not on the first task's clock (torch.optim's first use: ~1 s)
    shape = infer_data_shape(app.clients, None)
    data = poisoned(config, app.clients, shape, byzantine=byzantine)[client]
    copies = ReloadedCopy(template)

    def train(task: TrainTask, model: PublishedModel, steps: int) -> Trained:
        total = total_steps(len(data), task.config, task.config.max_steps)
        ctx = context_for(
            (task.key.round, client, task.key.attempt), max_steps=steps, total=total,
            config=training_of(task.config), seed=config.seed,
        )  # fmt: skip
        tensors, metrics = run_user_training(
            copies, model.tensors(), data, app.train, ctx, seed=config.seed
        )
        return Trained(tensors, len(data), steps, total, metrics)

    return Shard(client, config, template, manifest, data, len(app.clients), train)
