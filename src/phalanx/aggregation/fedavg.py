"""Federated averaging (McMahan et al., 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data"): the example-weighted mean of client updates.

Not robust: one scaled update moves it anywhere. Streaming keeps one running weighted sum
of d float32 and so needs O(d) memory for any n (float32 keeps that at one model's size;
its rounding depends on the order of arrival, which the simulation makes deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from phalanx.aggregation.base import Aggregate, RoundContext, check_inputs
from phalanx.errors import AggregationError


class FedAvg:
    name = "fedavg"

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._total = 0.0

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, context: RoundContext | None = None
    ) -> Aggregate:
        check_inputs(updates, weights)
        scale = (weights.double() / weights.double().sum()).to(updates.dtype)
        return Aggregate(scale @ updates)

    def begin(self, dim: int) -> None:
        self._sum = torch.zeros(dim)
        self._total = 0.0

    def add(self, parts: Iterable[tuple[int, torch.Tensor]], weight: float) -> None:
        total = self._sum
        if total is None:
            raise AggregationError("FedAvg.add called before begin()")
        if weight < 0:
            raise AggregationError(f"weight must be non-negative, got {weight}")
        dim = total.numel()
        for offset, piece in parts:
            end = offset + piece.numel()
            if offset < 0 or end > dim:
                raise AggregationError(f"part [{offset}, {end}) outside 0..{dim}")
            window = total if offset == 0 and end == dim else total[offset:end]
            window.add_(piece if piece.dim() == 1 else piece.reshape(-1), alpha=weight)
        self._total += weight

    def finish(self) -> torch.Tensor:
        if self._sum is None or self._total <= 0:
            raise AggregationError("FedAvg.finish: no weighted updates were added")
        result = self._sum.div_(self._total)
        self._sum = None
        return result
