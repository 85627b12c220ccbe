"""The training SDK a user writes against: ``train(model, data, ctx)`` and its context.

The user writes ``train(model, data, ctx)``: it trains ``model`` in place (already loaded
with the global weights) on one client's ``data`` and returns optional metrics. The same
function runs in the simulation's worker processes and in a real client process; this module
holds what both need: the context, the step count of a task, loading the global weights
into a fresh copy of the user's model, and turning what the function returns into metrics.

Reproducibility: ``ctx.generator`` is derived from (seed, "data", round, client, attempt),
the same stream the built-in trainer shuffles with, and torch's, numpy's and Python's global
generators are re-seeded from (seed, "train", round, client, attempt) before every call, so
dropout and other global draws do not depend on which process ran which attempt before.

Only parameters are federated: buffers (e.g. BatchNorm running statistics) start each
attempt at the template model's values and are not sent back.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Protocol, TypeAlias

import numpy as np
import torch
from torch import nn

from phalanx.config import TrainingConfig
from phalanx.core.rng import derive_seed, torch_rng
from phalanx.workloads.base import ClientData

log = logging.getLogger("phalanx.client.sdk")

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainContext:
    """What a user's training function knows about the attempt it is running."""

    client: int
    round: int
    attempt: int
    max_steps: int  # local steps allowed this attempt (< total_steps for partial work)
    total_steps: int  # ceil(len(data) / batch_size) * local_epochs
    config: TrainingConfig  # lr, local_epochs and batch_size from the run's config
    generator: torch.Generator  # shuffle with this, so runs are reproducible


UserTrainFn: TypeAlias = Callable[[nn.Module, ClientData, TrainContext], Mapping[str, float] | None]
"""Trains ``model`` in place on ``data``; returns metrics (e.g. {"loss": ...}) or None."""


class Epochs(Protocol):
    """What fixes a full attempt's length: ``TrainingConfig`` and a task's ``TaskConfig``."""

    @property
    def local_epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...


def total_steps(examples: int, config: Epochs, max_steps: int | None = None) -> int:
    """Local steps of a full attempt: whole passes over the data in ``batch_size`` batches,
    capped by a step budget when the task sets one."""
    steps = -(-examples // config.batch_size) * config.local_epochs
    return steps if max_steps is None else min(steps, max_steps)


def float_metrics(metrics: object) -> dict[str, float]:
    """The user's metrics as floats: numbers and one-element tensors kept, others dropped.

    A metric that is not a number is dropped (and logged), not an error: a stray string in
    the metrics must not throw away an otherwise good update.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"train function must return a mapping of metrics or None; got {type(metrics).__name__}"
        )
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[str(name)] = float(value.item())
        elif isinstance(value, Real):
            out[str(name)] = float(value)
        else:
            log.debug("metric %r dropped: %s is not a number", name, type(value).__name__)
    return out


@functools.cache
def preload_lazy_imports() -> None:
    """Import once, up front, what a training function would otherwise import on its first
    call.

    Constructing any ``torch.optim`` optimiser first imports ``torch._dynamo`` (about 1 s on
    a CPU). Forked workers do not share later imports, so every fresh worker would pay it
    on its first job, inside the hang guard: with a guard of a few seconds a healthy first
    job is killed as hung, and its replacement starts cold again. Imported once in the
    parent, before the first fork, every worker inherits it. The import starts no threads,
    so forking stays safe.
    """
    with contextlib.suppress(ImportError):
        importlib.import_module("torch._dynamo")


def seed_globals(seed: int, key: tuple[int, int, int]) -> None:
    """Global generators keyed by the attempt, not by the process's history of jobs."""
    derived = derive_seed(seed, "train", *key)
    torch.manual_seed(derived)
    np.random.seed(derived % 2**32)
    random.seed(derived)


def load_params(model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy the received global weights into ``model``'s parameters, in place."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(params[name])


def run_user_training(
    template: nn.Module,
    params: Mapping[str, torch.Tensor],
    data: ClientData,
    train_fn: UserTrainFn,
    ctx: TrainContext,
    *,
    seed: int,
) -> tuple[Tensors, dict[str, float]]:
    """Train a fresh copy of ``template``, loaded with ``params``, with the user's function:
    (new weights by name, metrics).

    A deep copy per attempt, so nothing one attempt does to the model (weights, added hooks,
    optimiser state attached to it) leaks into the next attempt in the same process.
    """
    model = copy.deepcopy(template)
    load_params(model, params)
    model.train()
    seed_globals(seed, (ctx.round, ctx.client, ctx.attempt))
    metrics = float_metrics(train_fn(model, data, ctx))
    return {name: p.detach().clone() for name, p in model.named_parameters()}, metrics


def context_for(
    key: tuple[int, int, int], *, max_steps: int, total: int, config: TrainingConfig, seed: int
) -> TrainContext:
    """The context of attempt ``key`` = (round, client, attempt)."""
    round_index, client, attempt = key
    return TrainContext(
        client=client, round=round_index, attempt=attempt, max_steps=max_steps,
        total_steps=total, config=config, generator=torch_rng(seed, "data", *key),
    )  # fmt: skip
