from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.aggregation import FedAvg, build_aggregator
from phalanx.errors import AggregationError, ConfigError


def test_weighted_mean_by_hand() -> None:
    updates = torch.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 2.0]])
    out = FedAvg().aggregate(updates, torch.tensor([1.0, 3.0])).vector
    assert torch.allclose(out, torch.tensor([2.5, 3.0, 2.0]))


def test_streaming_equals_stacked_and_holds_one_vector() -> None:
    agg = FedAvg()
    agg.begin(3)
    agg.add([(0, torch.tensor([1.0, 0.0, 2.0]))], 1.0)
    agg.add([(0, torch.tensor([3.0])), (1, torch.tensor([4.0, 2.0]))], 3.0)  # in parts
    assert torch.allclose(agg.finish(), torch.tensor([2.5, 3.0, 2.0]))
    agg.begin(2)
    with pytest.raises(AggregationError, match="outside"):
        agg.add([(1, torch.ones(2))], 1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=6, max_size=6), st.permutations(range(3)))
def test_permutation_invariant(values: list[float], order: list[int]) -> None:
    updates = torch.tensor(values).view(3, 2)
    weights = torch.tensor([1.0, 2.0, 3.0])
    a = FedAvg().aggregate(updates, weights).vector
    b = FedAvg().aggregate(updates[order], weights[order]).vector
    assert torch.allclose(a, b, atol=1e-4)


def test_bad_inputs_fail_with_the_problem() -> None:
    with pytest.raises(AggregationError, match="n x d"):
        FedAvg().aggregate(torch.zeros(3), torch.ones(3))
    with pytest.raises(AggregationError, match="2 weights"):
        FedAvg().aggregate(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(AggregationError, match="sum to zero"):
        FedAvg().aggregate(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(AggregationError, match="begin"):
        FedAvg().add([(0, torch.zeros(3))], 1.0)


def test_registry_lists_valid_names() -> None:
    assert isinstance(build_aggregator("fedavg"), FedAvg)
    with pytest.raises(ConfigError, match="valid: bulyan, centered_clipping, fedavg"):
        build_aggregator("krum2")
