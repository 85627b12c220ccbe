"""A user's own training function on the simulation's worker processes.

The function and its context are the client SDK's (``phalanx.client.sdk``); this module only
adapts them to the ``WorkerPool`` contract (name -> tensor dict in, new tensors and float
metrics out). The adapter runs in forked workers, so the template model, the clients' data
and the user's function are inherited, never pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from phalanx.client.sdk import UserTrainFn, context_for, run_user_training
from phalanx.config import TrainingConfig
from phalanx.runtime.inprocess.workers import Tensors, TrainFn
from phalanx.workloads.base import ClientData


def worker_train_fn(
    template: nn.Module,
    clients: Sequence[ClientData],
    train_fn: UserTrainFn,
    config: TrainingConfig,
    *,
    seed: int,
) -> TrainFn:
    """The ``WorkerPool`` function that runs ``train_fn`` on a fresh copy of ``template``."""

    def run(client: int, params: Tensors, meta: dict[str, Any]) -> tuple[Tensors, dict[str, float]]:
        key = (int(meta["round"]), client, int(meta["attempt"]))
        ctx = context_for(
            key, max_steps=int(meta["max_steps"]), total=int(meta["total_steps"]),
            config=config, seed=seed,
        )  # fmt: skip
        return run_user_training(template, params, clients[client], train_fn, ctx, seed=seed)

    return run
