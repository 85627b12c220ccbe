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

Each worker keeps one copy of the template and reloads it for every attempt (parameters
from the global weights, buffers from the template, gradients cleared, ``requires_grad`` as
the template has it) instead of deep-copying the template per attempt. An attempt that
changes the model in any other way the reload would miss (an added hook or attribute, a
changed setting such as a dropout rate, a replaced parameter or submodule) is detected
after it returns and the copy is thrown away, so the next attempt starts from a fresh deep
copy: nothing one attempt does leaks into the next.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import logging
import operator
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
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.manual_seed(derived)
    else:  # the CPU generator alone: torch.manual_seed queues lazy device seeds (~0.4 ms)
        torch.default_generator.manual_seed(derived)
    np.random.seed(derived % 2**32)
    random.seed(derived)


Fingerprint: TypeAlias = tuple[list[object], list[object]]  # (by identity, by value)


def fingerprint(model: nn.Module) -> Fingerprint:
    """What a reload does not restore: every attribute of every module (hooks, submodules,
    settings, the parameter and buffer dicts and their contents) by identity, and each
    parameter's tensor hooks by identity and its shape and dtype by value. Taken in training
    mode, which every attempt starts in."""
    ids: list[object] = []
    for module in model.modules():
        for name, value in vars(module).items():
            ids += (name, value)
            if isinstance(value, dict):
                ids.extend(value)
                ids.extend(value.values())
    values: list[object] = []
    for param in model.parameters():
        ids += (param._backward_hooks, getattr(param, "_post_accumulate_grad_hooks", None))
        values += (param.shape, param.dtype)
    return ids, values


def same(a: Fingerprint, b: Fingerprint) -> bool:
    """The same objects in the same places, and the same shapes and dtypes."""
    return len(a[0]) == len(b[0]) and all(map(operator.is_, a[0], b[0])) and a[1] == b[1]


def _reusable(model: nn.Module) -> bool:
    """A model whose modules hold tensors outside parameters and buffers is never reused:
    the reload could not restore them."""
    return not any(isinstance(v, torch.Tensor) for m in model.modules() for v in vars(m).values())


class ReloadedCopy:
    """One worker's copy of the template, reloaded for each attempt (see module docstring)."""

    def __init__(self, template: nn.Module) -> None:
        self._template = template
        self._reuse = _reusable(template)
        self._model: nn.Module | None = None
        self._print: Fingerprint = ([], [])

    def load(self, params: Tensors) -> nn.Module:
        model = self._model
        if model is None or not self._reuse:
            model = self._model = copy.deepcopy(self._template).train()
            self._print = fingerprint(model)
        with torch.no_grad():
            for (name, param), (_, original) in zip(
                model.named_parameters(), self._template.named_parameters(), strict=True
            ):
                param.copy_(params[name])
                param.grad = None
                param.requires_grad_(original.requires_grad)
            for buffer, initial in zip(model.buffers(), self._template.buffers(), strict=True):
                buffer.copy_(initial)
        return model.train()

    def release(self, model: nn.Module) -> None:
        """After an attempt: keep the copy only if the attempt left it as a reload expects."""
        model.train()  # an attempt may end in eval mode: not a change a reload misses
        if not same(fingerprint(model), self._print):
            self._model = None


def worker_train_fn(
    template: nn.Module,
    clients: Sequence[ClientData],
    train_fn: UserTrainFn,
    config: TrainingConfig,
    *,
    seed: int,
) -> TrainFn:
    """The ``WorkerPool`` function that runs ``train_fn`` on the template loaded with the
    global weights: a reloaded per-worker copy, or a fresh deep copy when the last attempt
    changed the model beyond what a reload restores (see the module docstring)."""
    copies = ReloadedCopy(template)  # each forked worker has its own

    def run(client: int, params: Tensors, meta: dict[str, Any]) -> tuple[Tensors, dict[str, float]]:
        key = (int(meta["round"]), client, int(meta["attempt"]))
        model = copies.load(params)
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
        try:
            metrics = float_metrics(train_fn(model, clients[client], ctx))
            return {name: p.detach().clone() for name, p in model.named_parameters()}, metrics
        finally:
            copies.release(model)

    return run


__all__ = [
    "ReloadedCopy",
    "TrainContext",
    "UserTrainFn",
    "float_metrics",
    "preload_lazy_imports",
    "total_steps",
    "worker_train_fn",
]
