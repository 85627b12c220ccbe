"""Coordinate-wise winsorising (backdoors): each coordinate's f extremes at each end pulled
in to the nearest value left, the rows handed on whole to the rule, the round's reports
kept; with ``consensus``, only coordinates whose median is near zero next to their spread.
Tiny literal rows worked out by hand, and a property: f rows anywhere move no coordinate of
any row outside the honest rows' range."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.aggregation import Aggregate, build_aggregator
from phalanx.aggregation.coordinatewise import BLOCK, winsorised
from phalanx.aggregation.rows import Rows
from phalanx.config import AggregationConfig, StepConfig
from phalanx.errors import AggregationError

# Per column, sorted: (-50, 1, 2, 3, 100) and (-7, 0, 1, 2, 5).
ROWS = [[1.0, 5.0], [2.0, -7.0], [3.0, 0.0], [100.0, 1.0], [-50.0, 2.0]]


def run(
    name: str, rows: list[list[float]], *, f: int, pre: tuple[StepConfig, ...], **params: Any
) -> Aggregate:
    aggregator = build_aggregator(AggregationConfig(name=name, f=f, params=params, pre=pre))
    return aggregator.aggregate(torch.tensor(rows), torch.ones(len(rows)))


def winsorise(**params: Any) -> StepConfig:
    return StepConfig(name="winsorise", params=params)


def test_winsorised_clamps_each_coordinate_to_its_trim_th_values_from_each_end() -> None:
    # trim 1: column 0 to [1, 3], column 1 to [0, 2].
    expected = [[1.0, 2.0], [2.0, 0.0], [3.0, 0.0], [3.0, 1.0], [1.0, 2.0]]

    assert winsorised(torch.tensor(ROWS), 1).tolist() == expected
    assert winsorised(torch.tensor(ROWS), 0).tolist() == ROWS


def test_widen_moves_each_bound_away_from_the_median() -> None:
    # trim 1, widen 2: column 0 (median 2) from [1, 3] to [0, 4], column 1 (median 1) from
    # [0, 2] to [-1, 3].
    expected = [[1.0, 3.0], [2.0, -1.0], [3.0, 0.0], [4.0, 1.0], [0.0, 2.0]]

    assert winsorised(torch.tensor(ROWS), 1, widen=2.0).tolist() == expected


def test_one_sided_clamps_only_the_end_whose_extremes_lie_further_out() -> None:
    # trim 1. Column 0: 100 lies 97 above 3, -50 lies 51 below 1: only the top is clamped.
    # Column 1: 5 lies 3 above 2, -7 lies 7 below 0: only the bottom is clamped.
    expected = [[1.0, 5.0], [2.0, 0.0], [3.0, 0.0], [3.0, 1.0], [-50.0, 2.0]]

    assert winsorised(torch.tensor(ROWS), 1, one_sided=True).tolist() == expected


def test_quiet_clamps_only_coordinates_the_bulk_barely_moves() -> None:
    # trim 1: spreads 2, 2 and 0.1 (column 2 sorted -0.1, 0, 0.05, 0.1, 10), median 2.
    # quiet 0.5 clamps where the spread is <= 1: column 2 alone, to [0, 0.1].
    rows = torch.tensor([[1.0, 5.0, 0.0], [2.0, -7.0, 0.1], [3.0, 0.0, -0.1],
                         [100.0, 1.0, 0.05], [-50.0, 2.0, 10.0]])  # fmt: skip
    expected = rows.clone()
    expected[2, 2], expected[4, 2] = 0.0, 0.1

    assert torch.equal(winsorised(rows, 1, quiet=0.5), expected)
    assert torch.equal(winsorised(rows, 1, quiet=1.0), winsorised(rows, 1))


def test_consensus_is_judged_on_the_bounds_before_widening() -> None:
    # Column 0: |2| > 0.5 x (3 - 1), spared; widened first its spread would be 4 and
    # |2| <= 0.5 x 4 would clamp it. Column 1 is clamped to its widened bounds [-1, 3].
    expected = [[1.0, 3.0], [2.0, -1.0], [3.0, 0.0], [100.0, 1.0], [-50.0, 2.0]]

    assert winsorised(torch.tensor(ROWS), 1, consensus=0.5, widen=2.0).tolist() == expected


def test_consensus_spares_coordinates_whose_median_is_far_from_zero() -> None:
    # trim 1: column 0 has median 2 and spread 3 - 1 = 2, column 1 median 1 and spread 2.
    # consensus 0.5: |2| > 1, so column 0 is left alone; |1| <= 1, so column 1 is clamped.
    expected = [[1.0, 2.0], [2.0, 0.0], [3.0, 0.0], [100.0, 1.0], [-50.0, 2.0]]

    assert winsorised(torch.tensor(ROWS), 1, consensus=0.5).tolist() == expected
    assert (
        winsorised(torch.tensor(ROWS), 1, consensus=1.0).tolist()
        == winsorised(torch.tensor(ROWS), 1).tolist()
    )
    assert winsorised(torch.tensor(ROWS), 1, consensus=0.0).tolist() == [
        [1.0, 5.0],
        [2.0, -7.0],
        [3.0, 0.0],
        [100.0, 1.0],
        [-50.0, 2.0],
    ]


def test_winsorise_step_passes_consensus_on() -> None:
    # Column 0 unclamped: (1 + 2 + 3 + 100 - 50) / 5 = 11.2; column 1 clamped: 5 / 5 = 1.
    result = run("fedavg", ROWS, f=1, pre=(winsorise(consensus=0.5),))

    assert result.vector.tolist() == pytest.approx([11.2, 1.0])


def test_winsorised_works_across_column_blocks() -> None:
    x = torch.randn(5, BLOCK + 7, generator=torch.Generator().manual_seed(0))
    ordered = x.sort(dim=0).values

    expected = torch.minimum(torch.maximum(x, ordered[1]), ordered[3])

    assert torch.equal(winsorised(x, 1), expected)


def test_winsorise_then_mean_averages_the_clamped_rows() -> None:
    # Clamped rows (trim = f = 1) sum to (10, 5): the mean is (2, 1).
    result = run("fedavg", ROWS, f=1, pre=(winsorise(),))

    assert result.vector.tolist() == [2.0, 1.0]
    assert result.discarded == ()


def test_an_explicit_trim_replaces_f_and_f_zero_changes_nothing() -> None:
    # trim 2: every column to its median (2 and 1).
    result = run("fedavg", ROWS, f=1, pre=(winsorise(trim=2),))

    assert result.vector.tolist() == [2.0, 1.0]
    unchanged = run("fedavg", ROWS, f=0, pre=(winsorise(),)).vector
    assert unchanged.tolist() == pytest.approx([11.2, 0.2])


def test_winsorise_refuses_too_few_rows_for_its_trim() -> None:
    with pytest.raises(AggregationError, match=r"winsorise needs f <= trim and n >= 2 trim \+ 1"):
        run("fedavg", ROWS, f=1, pre=(winsorise(trim=3),))
    with pytest.raises(AggregationError, match=r"\(trim=0\); got n=5, f=1"):
        run("fedavg", ROWS, f=1, pre=(winsorise(trim=0),))
    with pytest.raises(AggregationError, match=r"winsorise needs n >= 2f \+ 1; got n=5, f=3"):
        run("fedavg", ROWS, f=3, pre=(winsorise(),))


def test_reports_of_earlier_steps_survive_the_replacement() -> None:
    # Static clipping to 10 scales row 3 (norm ~100.005) and row 4 (norm ~50.04) first.
    clip = StepConfig(name="clipping", params={"mode": "static", "threshold": 10.0})
    result = run("fedavg", ROWS, f=1, pre=(clip, winsorise()))

    assert sorted(result.scaled) == [3, 4]


def test_replaced_rows_keep_weights_and_owners_and_refuse_a_wrong_shape() -> None:
    rows = Rows.of(torch.tensor(ROWS), torch.arange(1.0, 6.0))
    new = rows.replaced(torch.zeros(5, 2))

    assert new.weights.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert new.owners == rows.owners
    assert new.sq_norms().tolist() == [0.0] * 5
    with pytest.raises(AggregationError, match=r"\(4, 2\) replacement rows for 5 x 2"):
        rows.replaced(torch.zeros(4, 2))


@settings(max_examples=30, deadline=None)
@given(
    honest=st.lists(
        st.lists(st.floats(-10, 10, width=32), min_size=3, max_size=3), min_size=3, max_size=6
    ),
    f=st.integers(1, 3),
    outlier=st.sampled_from([-1e9, 1e9]),
)
def test_f_rows_anywhere_leave_every_coordinate_in_the_honest_range(
    honest: list[list[float]], f: int, outlier: float
) -> None:
    f = min(f, len(honest) - 1)  # n = len(honest) + f >= 2f + 1
    x = torch.tensor(honest + [[outlier, -outlier, outlier]] * f)
    low, high = x[: len(honest)].min(dim=0).values, x[: len(honest)].max(dim=0).values

    out = winsorised(x, f)

    assert bool(((out >= low) & (out <= high)).all())
