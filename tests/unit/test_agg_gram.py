"""The round's one pairwise-distance computation: a float64 Gram matrix, computed at most
once per ``aggregate`` call however many distance-based parts a pipeline has."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from phalanx.aggregation import build_aggregator
from phalanx.aggregation import rows as rows_module
from phalanx.aggregation.rows import GRAM_CHUNK, Rows, gram_matrix, sq_distances_from_gram
from phalanx.config import AggregationConfig, StepConfig


@pytest.mark.parametrize("d", [3, GRAM_CHUNK, GRAM_CHUNK + 1, 2 * GRAM_CHUNK + 5])
def test_gram_matrix_is_the_float64_product_of_the_rows(d: int) -> None:
    x = torch.randn(5, d, generator=torch.Generator().manual_seed(d))

    gram = gram_matrix(x)

    assert gram.dtype == torch.float64
    assert torch.equal(gram, gram.T)
    assert torch.allclose(gram, x.double() @ x.double().T, rtol=1e-12, atol=1e-9)


def test_gram_matrix_keeps_honest_distances_next_to_huge_rows() -> None:
    # Row 2 at 1e9: float32 products would lose the 1.0 between rows 0 and 1; float64
    # accumulation of exact float32 products keeps it.
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [1e9, -1e9, 1e9]])

    distances = sq_distances_from_gram(gram_matrix(x))

    assert distances[0, 1].item() == 1.0
    assert torch.equal(distances.diagonal(), torch.zeros(3, dtype=torch.float64))


def test_sq_distances_from_gram_by_hand() -> None:
    # Rows (0, 0), (3, 4), (0, 1): Gram [[0, 0, 0], [0, 25, 4], [0, 4, 1]];
    # distances 25, 1 and 25 + 1 - 8 = 18.
    gram = torch.tensor([[0.0, 0.0, 0.0], [0.0, 25.0, 4.0], [0.0, 4.0, 1.0]], dtype=torch.float64)

    distances = sq_distances_from_gram(gram)

    expected = [[0.0, 25.0, 1.0], [25.0, 0.0, 18.0], [1.0, 18.0, 0.0]]
    assert torch.equal(distances, torch.tensor(expected, dtype=torch.float64))


def test_rows_after_mixing_take_distances_from_the_same_gram() -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    rows = Rows.of(x, torch.ones(4))
    matrix = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))

    mixed = rows.remix(matrix, torch.ones(3), ((0,), (1,), (2,)))

    current = matrix.double() @ x.double()
    assert torch.allclose(mixed.sq_distances(), torch.cdist(current, current).square())
    assert torch.allclose(mixed.materialise().double(), current, atol=1e-5)
    assert mixed.shared is rows.shared


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original: Callable[[torch.Tensor], torch.Tensor] = rows_module.gram_matrix

    def wrapper(updates: torch.Tensor) -> torch.Tensor:
        calls.append(updates.shape[0])
        return original(updates)

    monkeypatch.setattr(rows_module, "gram_matrix", wrapper)
    return calls


PIPELINES = [
    ("krum", ("nnm",)),
    ("bulyan", ("clipping", "nnm")),
    ("multi_krum", ("nnm", "clipping")),
    ("geometric_median", ("nnm",)),
    ("centered_clipping", ("nnm",)),
    ("krum", ()),
]


@pytest.mark.parametrize(("rule", "steps"), PIPELINES)
def test_one_gram_matrix_per_round_however_many_parts_need_distances(
    monkeypatch: pytest.MonkeyPatch, rule: str, steps: tuple[str, ...]
) -> None:
    calls = counting(monkeypatch)
    pre = tuple(StepConfig(name=name) for name in steps)
    aggregator = build_aggregator(AggregationConfig(name=rule, f=1, pre=pre))
    updates = torch.randn(7, 4, generator=torch.Generator().manual_seed(2))

    aggregator.aggregate(updates, torch.ones(7))
    assert calls == [7]  # once, on the original stack

    aggregator.aggregate(updates * 2, torch.ones(7))
    assert calls == [7, 7]  # a new round, a new stack: computed afresh, never reused


@pytest.mark.parametrize(
    "config",
    [
        AggregationConfig(name="median", f=1),
        AggregationConfig(name="trimmed_mean", f=1),
        AggregationConfig(name="centered_clipping", f=1),
        AggregationConfig(name="fedavg", f=1, pre=(StepConfig(name="clipping"),)),
    ],
)
def test_rules_without_pairwise_distances_never_build_the_gram(
    monkeypatch: pytest.MonkeyPatch, config: AggregationConfig
) -> None:
    calls = counting(monkeypatch)

    build_aggregator(config).aggregate(torch.randn(5, 4), torch.ones(5))

    assert calls == []
