"""Federated averaging (McMahan et al., 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data"): the example-weighted mean of client updates.

Not robust: one scaled update moves it anywhere. Streaming keeps one running weighted sum
(float64, so the order of arrival barely matters) and so needs O(d) memory for any n.
"""

from __future__ import annotations

import torch

from phalanx.aggregation.base import check_inputs
from phalanx.errors import AggregationError


class FedAvg:
    name = "fedavg"

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._total = 0.0

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        check_inputs(updates, weights)
        scale = (weights.double() / weights.double().sum()).to(updates.dtype)
        return scale @ updates

    def begin(self, dim: int) -> None:
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._total = 0.0

    def add(self, update: torch.Tensor, weight: float) -> None:
        if self._sum is None:
            raise AggregationError("FedAvg.add called before begin()")
        if update.shape != self._sum.shape:
            raise AggregationError(
                f"update has shape {tuple(update.shape)}, expected {tuple(self._sum.shape)}"
            )
        if weight < 0:
            raise AggregationError(f"weight must be non-negative, got {weight}")
        self._sum.add_(update.double(), alpha=weight)
        self._total += weight

    def finish(self) -> torch.Tensor:
        if self._sum is None or self._total <= 0:
            raise AggregationError("FedAvg.finish: no weighted updates were added")
        result = (self._sum / self._total).float()
        self._sum = None
        return result
