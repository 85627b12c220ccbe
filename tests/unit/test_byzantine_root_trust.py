"""The root-dataset experiment's rule and split: FLTrust's weights, and a root set held
apart from the clients' data."""

from __future__ import annotations

import pytest
import torch

from benchmarks.byzantine.root_trust import (
    CLIENTS,
    ROOT_EXAMPLES,
    TRUSTED,
    FLTrust,
    FLTrustParams,
    with_root,
)
from phalanx.aggregation.base import RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.config import DigitsWorkload
from phalanx.errors import AggregationError


def fltrust(updates: list[list[float]], **params: object) -> tuple[torch.Tensor, set[int]]:
    """(aggregate, rows given no say) with the last row trusted."""
    rows = Rows.of(torch.tensor(updates), torch.ones(len(updates), dtype=torch.float64))
    context = RoundContext(clients=(*range(len(updates) - 1), TRUSTED))
    result = FLTrust(FLTrustParams(trusted=TRUSTED, **params))(rows, 1, context)
    return result.vector, rows.shared.discarded


def test_trust_is_the_cosine_with_the_root_and_each_update_takes_the_roots_norm() -> None:
    # cosines with the root (1, 0): 1, 0.6, -1; the opposed row gets no say.
    vector, ignored = fltrust([[4.0, 0.0], [3.0, 4.0], [-9.0, 0.0], [2.0, 0.0]])
    expected = (1.0 * torch.tensor([2.0, 0.0]) + 0.6 * torch.tensor([1.2, 1.6])) / 1.6
    assert torch.allclose(vector, expected)
    assert ignored == {2}


def test_a_floor_gives_opposed_rows_a_small_say_and_keep_norm_clips_to_the_median() -> None:
    rows = [[4.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [1.0, 0.0]]
    vector, ignored = fltrust(rows, floor=0.5, keep_norm=True)
    # trust 1.5, 0.5, 1.5; the judged rows' median norm is 2: [4, 0] is clipped to [2, 0]
    assert torch.allclose(vector, torch.tensor([(1.5 * 2 - 0.5 + 1.5 * 2) / 3.5, 0.0]))
    assert ignored == set()


def test_a_round_without_the_trusted_update_is_refused() -> None:
    rows = Rows.of(torch.ones(2, 3), torch.ones(2, dtype=torch.float64))
    with pytest.raises(AggregationError, match="no update from trusted client"):
        FLTrust(FLTrustParams(trusted=TRUSTED))(rows, 0, RoundContext(clients=(0, 1)))


def test_the_root_set_is_stratified_and_apart_from_every_client_and_the_test_set() -> None:
    clients, test = with_root(DigitsWorkload(num_clients=CLIENTS, dirichlet_alpha=0.1), seed=7)
    assert len(clients) == CLIENTS + 1
    root = clients[TRUSTED]
    assert len(root) == ROOT_EXAMPLES and torch.bincount(root.y).tolist() == [10] * 10
    rows = [tuple(x.flatten().tolist()) for data in (*clients, test) for x in data.x]
    assert len(rows) == 1797  # every digit once: nobody shares an example
    assert root.x.shape[1:] == (8, 8)
