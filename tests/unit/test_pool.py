"""The update pool: streaming FedAvg holds a bounded number of updates; the relative norm
bound uses the prior round's norms; a stacking aggregator is refused past its budget."""

from __future__ import annotations

import pytest
import torch

from phalanx.aggregation import Aggregate, FedAvg, RoundContext
from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskKey
from phalanx.core.tensors import Manifest
from phalanx.engine.pool import MemoryBudgetError, UpdatePool
from phalanx.engine.validation import Accepted
from phalanx.types import RejectReason

CONFIG = ValidationConfig(max_relative_norm=3.0, relative_min_updates=3, reference_updates=3)


class StackingMean:
    """A non-streaming aggregator (needs the n x d stack), for the budget path."""

    name = "stacking-mean"

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, context: RoundContext | None = None
    ) -> Aggregate:
        return Aggregate(updates.mean(dim=0))


MANIFEST = Manifest.of({"w": torch.zeros(4)})


def item(client: int, value: float, weight: float = 1.0) -> Accepted:
    """An update whose delta from a zero global model is ``value`` everywhere."""
    tensors = {"w": torch.full((4,), value)}
    update = ClientUpdate(Envelope(), TaskKey(0, client, 1), ModelRef(0, ""), 1, 1, 1, tensors, "")
    return Accepted(update, torch.zeros(4), MANIFEST, 2.0 * abs(value), weight)


def test_streaming_holds_only_until_the_reference_exists_then_folds() -> None:
    pool = UpdatePool(FedAvg(), CONFIG, dim=4, budget_bytes=10**9)
    assert pool.add(item(0, 1.0)) == [] and pool.held_bytes() == 16
    assert pool.add(item(1, 1.0)) == [] and pool.held_bytes() == 32
    assert pool.add(item(2, 1.0, weight=2.0)) == []
    assert pool.held_bytes() == 0  # reference reached: all folded
    for client in range(3, 50):
        assert pool.add(item(client, 1.0)) == []
        assert pool.held_bytes() == 0  # O(d) for any number of clients
    assert torch.allclose(pool.aggregate(RoundContext())[0].vector, torch.ones(4))
    assert pool.count == 50


def test_outliers_are_rejected_against_the_median_and_never_folded() -> None:
    pool = UpdatePool(FedAvg(), CONFIG, dim=4, budget_bytes=10**9)
    pool.add(item(0, 1.0))
    pool.add(item(1, 100.0))
    outliers = pool.add(item(2, 1.0))
    assert [(a.update.key.client, v.reason) for a, v in outliers] == [
        (1, RejectReason.NORM_RELATIVE)
    ]
    late = pool.add(item(3, 50.0))
    assert [a.update.key.client for a, _ in late] == [3]
    assert [m.client for m in pool.members()] == [0, 2]
    assert torch.allclose(pool.aggregate(RoundContext())[0].vector, torch.ones(4))


def test_a_prior_reference_stops_a_corrupted_majority_of_early_arrivals() -> None:
    pool = UpdatePool(FedAvg(), CONFIG, dim=4, budget_bytes=10**9, prior_norms=[2.0] * 8)
    rejected = [c for c in range(3) for _ in pool.add(item(c, 100.0))]
    assert rejected == [0, 1, 2]
    assert pool.add(item(3, 1.0)) == []
    assert pool.accepted_norms() == [2.0]


def test_a_stacking_aggregator_is_refused_past_the_budget() -> None:
    pool = UpdatePool(StackingMean(), CONFIG, dim=4, budget_bytes=2 * 4 * 4)
    pool.add(item(0, 1.0))
    pool.add(item(1, 3.0))
    with pytest.raises(MemoryBudgetError, match=r"3 x 4 float32 = 48 bytes exceeds"):
        pool.add(item(2, 2.0))
    assert torch.allclose(pool.aggregate(RoundContext())[0].vector, torch.full((4,), 2.0))


def test_a_stacking_aggregator_is_told_the_client_behind_each_row() -> None:
    seen: list[tuple[int, ...]] = []

    class Spy(StackingMean):
        def aggregate(
            self, updates: torch.Tensor, weights: torch.Tensor, context: RoundContext | None = None
        ) -> Aggregate:
            seen.append(context.clients if context is not None else ())
            return super().aggregate(updates, weights, context)

    pool = UpdatePool(Spy(), CONFIG, dim=4, budget_bytes=10**9)
    for client in (7, 2, 5):
        pool.add(item(client, 1.0))
    _, order = pool.aggregate(RoundContext(round_index=3))
    assert order == [2, 5, 7] and seen == [(2, 5, 7)]
