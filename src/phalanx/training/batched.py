"""Local SGD for k clients in one pass: parameters stacked along a leading client axis.

Clients differ in data size and in how many steps they may take (a straggler doing partial
work); both are masks, so a client that has finished simply stops moving (plain SGD with a
zero gradient is a no-op). Each client's data order comes from its own generator, so its
result does not depend on which other clients share the batch.

A batch's working set grows with its width k: k copies of the parameters, their gradients,
the k x d result, each layer's activations and their gradients, and the clients' shuffled
data. ``bytes_per_client`` estimates one client's share, so a caller can bound k by memory
rather than by a round's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from phalanx.config import TrainingConfig
from phalanx.core.tensors import Manifest
from phalanx.training.stacked import StackedModel


@dataclass(frozen=True)
class ClientBatch:
    """k clients' padded data: x (k, n_max, ...), y (k, n_max), n (k,) valid counts."""

    x: torch.Tensor
    y: torch.Tensor
    n: torch.Tensor


class BatchedSGD:
    def __init__(self, model: nn.Module, manifest: Manifest, config: TrainingConfig) -> None:
        self._model = StackedModel(model, manifest)
        self._manifest = manifest
        self._feature_major = self._model.feature_major
        self._config = config

    def bytes_per_client(self, example: torch.Tensor, n_max: int) -> int:
        """One client's share of a batch's working set, from one ``example`` (no batch axis)
        and the longest client's ``n_max`` examples: the parameters, their gradients, the
        flat result and the step's temporaries (4 x d), each module's output for a batch,
        kept for the backward pass and matched by its gradient (2 x), and the shuffled data
        (and its feature-major copy)."""
        outputs = self._model.activation_floats(example)
        d = self._manifest.dim
        floats = 4 * d + 2 * outputs * self._config.batch_size + 2 * n_max * example.numel()
        return 4 * floats

    def steps_per_client(self, n: torch.Tensor) -> torch.Tensor:
        size = self._config.batch_size
        return torch.div(n + size - 1, size, rounding_mode="floor") * self._config.local_epochs

    def train(
        self,
        params: torch.Tensor,
        data: ClientBatch,
        step_limit: torch.Tensor,
        generators: list[torch.Generator],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (new flat params (k, d), mean training loss (k,), steps taken (k,))."""
        k = data.x.shape[0]
        leaves = self._model.leaves(params, k)
        losses: list[torch.Tensor] = []
        steps = torch.zeros(k)
        full_batches = bool((data.n == data.y.shape[1]).all()) and bool(
            (step_limit >= self.steps_per_client(data.n)).all()
        )  # then no masks are needed: the fast path
        for _ in range(self._config.local_epochs):
            xs, ys, valid = self._epoch(data, generators)
            for start in range(0, ys.shape[1], self._config.batch_size):
                stop = start + self._config.batch_size
                mask = (
                    None if full_batches else valid[:, start:stop] & (steps < step_limit)[:, None]
                )
                if mask is not None and not bool(mask.any()):
                    break
                xb = xs[..., start:stop] if self._feature_major else xs[:, start:stop]
                losses.append(self._step(leaves, xb, ys[:, start:stop], mask))
                steps += 1 if mask is None else mask.any(dim=1)
        mean_loss = self._mean_loss(losses, steps, full_batches)
        return self._model.flatten(leaves), mean_loss, steps

    def _manual_step(
        self,
        leaves: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        lr = self._config.lr
        if mask is None:
            return self._model.sgd_step(leaves, x, y, 1.0 / y.shape[1], lr)
        weights = mask.float()
        counts = weights.sum(1, keepdim=True).clamp(min=1)
        per_sample = self._model.sgd_step(leaves, x, y, (weights / counts).unsqueeze(1), lr)
        return (per_sample * weights).sum(1) / counts.squeeze(1)

    @staticmethod
    def _mean_loss(losses: list[torch.Tensor], steps: torch.Tensor, full: bool) -> torch.Tensor:
        """Mean training loss per client: over samples on the fast path, else over steps."""
        if not losses:
            return torch.zeros_like(steps)
        if full:
            return torch.cat(losses, dim=1).mean(dim=1)
        return torch.stack(losses).sum(0) / steps.clamp(min=1)

    def _epoch(
        self, data: ClientBatch, generators: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each client's samples in its own shuffled order, padded to the longest client."""
        k, width = data.y.shape
        order = torch.zeros(k, width, dtype=torch.long)
        valid = torch.zeros(k, width, dtype=torch.bool)
        for i, generator in enumerate(generators):
            count = int(data.n[i])
            order[i, :count] = torch.randperm(count, generator=generator)
            valid[i, :count] = True
        rows = (order + torch.arange(k).unsqueeze(1) * width).flatten()
        xs = data.x.flatten(0, 1).index_select(0, rows).view(k, width, -1)
        if self._feature_major:
            xs = xs.transpose(1, 2).contiguous()
        else:
            xs = xs.view(k, width, *data.x.shape[2:])
        return xs, data.y.flatten().index_select(0, rows).view(k, width), valid

    def _step(
        self,
        leaves: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """One SGD step for every client; returns its per-sample losses (fast path) or each
        client's batch-mean loss (0 for a client masked out). The objective is the sum over
        clients of each one's batch-mean loss, so client i's gradient is exactly its own."""
        if self._model.manual_backward:
            return self._manual_step(leaves, x, y, mask)
        per_sample = nn.functional.cross_entropy(self._model.logits(leaves, x), y, reduction="none")
        if mask is None:
            objective = per_sample.sum() / y.shape[1]
            per_client = per_sample.detach()  # reduced once, after training
        else:
            weights = mask.float()
            per_client = (per_sample * weights).sum(1) / weights.sum(1).clamp(min=1)
            objective = per_client.sum()
            per_client = per_client.detach()
        grads = torch.autograd.grad(objective, leaves)
        with torch.no_grad():
            torch._foreach_add_(leaves, grads, alpha=-self._config.lr)
        return per_client
