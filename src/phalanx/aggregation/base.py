"""The interface between the engine and any aggregation rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

from phalanx.errors import AggregationError


@runtime_checkable
class Aggregator(Protocol):
    """Combines ``n`` client updates (rows of an ``n x d`` tensor) into one ``d`` vector.

    Rows are update *deltas* (client weights minus the global model), in canonical order
    (sorted client id); ``weights`` are non-negative example counts scaled by work done.
    """

    name: str

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class StreamingAggregator(Aggregator, Protocol):
    """An aggregator that can also fold updates in one at a time in O(d) memory.

    ``add`` takes one update as ``(offset, piece)`` parts of its flat delta, so a caller can
    produce the delta a chunk at a time and never hold a second copy of the update.
    """

    def begin(self, dim: int) -> None: ...
    def add(self, parts: Iterable[tuple[int, torch.Tensor]], weight: float) -> None: ...
    def finish(self) -> torch.Tensor: ...


def check_inputs(updates: torch.Tensor, weights: torch.Tensor) -> None:
    """Shared precondition: a non-empty 2-D stack and one non-negative weight per row."""
    if updates.dim() != 2 or updates.shape[0] == 0:
        raise AggregationError(
            f"expected a non-empty n x d tensor, got shape {tuple(updates.shape)}"
        )
    if weights.shape != (updates.shape[0],):
        raise AggregationError(
            f"expected {updates.shape[0]} weights, got shape {tuple(weights.shape)}"
        )
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise AggregationError("weights must be finite and non-negative")
    if float(weights.sum()) <= 0:
        raise AggregationError("weights sum to zero: nothing to average")
