"""A user's own per-client training function, and the worker-side code that runs it.

The user writes ``train(model, data, ctx)``: it trains ``model`` in place (already loaded
with the global weights) on one client's ``data`` and returns optional metrics. This module
adapts that function to the ``WorkerPool`` contract (name -> tensor dict in, new tensors and
float metrics out). The adapter runs in forked workers, so the template model, the clients'
data and the user's function are inherited, never pickled.

Reproducibility: ``ctx.generator`` is derived from (seed, "data", round, client, attempt),
the same stream the built-in trainer shuffles with, and torch's, numpy's and Python's global
generators are re-seeded from (seed, "train", round, client, attempt) before every call, so
dropout and other global draws do not depend on which worker ran which job before.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import nn

from phalanx.config import TrainingConfig
from phalanx.core.rng import derive_seed, torch_rng
from phalanx.runtime.inprocess.workers import Tensors, TrainFn
from phalanx.workloads.base import ClientData

log = logging.getLogger("phalanx.runtime.user_training")


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


def total_steps(examples: int, config: TrainingConfig) -> int:
    """Local steps of a full attempt: whole passes over the data in ``batch_size`` batches."""
    return -(-examples // config.batch_size) * config.local_epochs


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
    """Import in the parent what a training function would otherwise import in each worker.

    Constructing any ``torch.optim`` optimiser first imports ``torch._dynamo`` (about 1 s on
    a CPU). Forked workers do not share later imports, so every fresh worker would pay it
    on its first job, inside the hang guard: with a guard of a few seconds a healthy first
    job is killed as hung, and its replacement starts cold again. Imported once here, before
    the first fork, every worker inherits it. The import starts no threads, so forking stays
    safe.
    """
    with contextlib.suppress(ImportError):
        importlib.import_module("torch._dynamo")


def _seed_globals(seed: int, key: tuple[int, int, int]) -> None:
    """Global generators keyed by the attempt, not by the worker's history of jobs."""
    derived = derive_seed(seed, "train", *key)
    torch.manual_seed(derived)
    np.random.seed(derived % 2**32)
    random.seed(derived)


def _load(model: nn.Module, params: Tensors) -> None:
    """Copy the received global weights into ``model``'s parameters, in place."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(params[name])


def worker_train_fn(
    template: nn.Module,
    clients: Sequence[ClientData],
    train_fn: UserTrainFn,
    config: TrainingConfig,
    *,
    seed: int,
) -> TrainFn:
    """The ``WorkerPool`` function that runs ``train_fn`` on a fresh copy of ``template``.

    A deep copy per job, so nothing one attempt does to the model (weights, added hooks,
    optimiser state attached to it) leaks into the next attempt on the same worker.
    """

    def run(client: int, params: Tensors, meta: dict[str, Any]) -> tuple[Tensors, dict[str, float]]:
        key = (int(meta["round"]), client, int(meta["attempt"]))
        model = copy.deepcopy(template)
        _load(model, params)
        model.train()
        ctx = TrainContext(
            client=client,
            round=key[0],
            attempt=key[2],
            max_steps=int(meta["max_steps"]),
            total_steps=int(meta["total_steps"]),
            config=config,
            generator=torch_rng(seed, "data", *key),
        )
        _seed_globals(seed, key)
        metrics = float_metrics(train_fn(model, clients[client], ctx))
        return {name: p.detach().clone() for name, p in model.named_parameters()}, metrics

    return run


__all__ = [
    "TrainContext",
    "UserTrainFn",
    "float_metrics",
    "preload_lazy_imports",
    "total_steps",
    "worker_train_fn",
]
