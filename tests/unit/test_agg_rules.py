"""Every robust rule on 3-7 clients of 3-4 dimensions, with the result worked out by hand.

Each test: Prepare (literal rows and weights), Execute (one ``aggregate`` call through the
registry, as the engine builds it), Assert (exact expectation, float32 tolerance only).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from phalanx.aggregation import Aggregate, FedAvg, Pipeline, RoundContext, build_aggregator
from phalanx.aggregation.centered_clipping import STATE_KEY
from phalanx.aggregation.coordinatewise import closest_to_median_mean
from phalanx.aggregation.krum import krum_scores
from phalanx.config import AggregationConfig, StepConfig


def aggregate(
    name: str,
    rows: list[list[float]],
    weights: list[float] | None = None,
    *,
    f: int = 0,
    context: RoundContext | None = None,
    pre: tuple[StepConfig, ...] = (),
    **params: Any,
) -> Aggregate:
    config = AggregationConfig(name=name, f=f, params=params, pre=pre)
    updates = torch.tensor(rows)
    w = torch.ones(len(rows)) if weights is None else torch.tensor(weights)
    return build_aggregator(config).aggregate(updates, w, context)


def close(actual: torch.Tensor, expected: list[float]) -> bool:
    return torch.allclose(actual, torch.tensor(expected), atol=1e-5, rtol=1e-6)


# --- median ---------------------------------------------------------------------------------


def test_median_of_an_odd_number_of_rows_is_the_middle_value_per_coordinate() -> None:
    # Columns sorted: (1, 2, 3), (0, 5, 9), (-2, 4, 7) -> middles 2, 5, 4.
    rows = [[1.0, 5.0, -2.0], [3.0, 0.0, 4.0], [2.0, 9.0, 7.0]]

    result = aggregate("median", rows, [1.0, 1.0, 100.0], f=1)

    assert close(result.vector, [2.0, 5.0, 4.0])  # unweighted: row 2's weight buys nothing
    assert result.discarded == () and dict(result.scaled) == {}


def test_median_of_an_even_number_of_rows_averages_the_two_middle_values() -> None:
    # Columns sorted: (1, 2, 4, 10) -> (2+4)/2 = 3; (0, 2, 6, 8) -> 4; (-1, 0, 3, 5) -> 1.5.
    rows = [[1.0, 8.0, 0.0], [4.0, 2.0, -1.0], [2.0, 6.0, 3.0], [10.0, 0.0, 5.0]]

    result = aggregate("median", rows, f=1)

    assert close(result.vector, [3.0, 4.0, 1.5])


# --- trimmed mean ---------------------------------------------------------------------------


TRIM_ROWS = [
    [1.0, 0.0, 10.0],
    [2.0, 100.0, 20.0],
    [3.0, -50.0, 30.0],
    [10.0, 1.0, 40.0],
    [100.0, 2.0, -1000.0],
]


def test_trimmed_mean_drops_f_values_at_each_end_per_coordinate() -> None:
    # Column 0 sorted 1 2 3 10 100 -> keep 2 3 10 -> 5; column 1 -50 0 1 2 100 -> keep 0 1 2
    # -> 1; column 2 -1000 10 20 30 40 -> keep 10 20 30 -> 20.
    result = aggregate("trimmed_mean", TRIM_ROWS, f=1)

    assert close(result.vector, [5.0, 1.0, 20.0])


def test_trimmed_mean_with_an_explicit_trim_beyond_f() -> None:
    # trim = 2 of 5 keeps only the middle value: 3, 1, 20. trim = 0 (f = 0) is the plain
    # mean: (1+2+3+10+100)/5 = 23.2, (0+100-50+1+2)/5 = 10.6, (10+20+30+40-1000)/5 = -180.
    wide = aggregate("trimmed_mean", TRIM_ROWS, f=1, trim=2)
    plain = aggregate("trimmed_mean", TRIM_ROWS, f=0, trim=0)

    assert close(wide.vector, [3.0, 1.0, 20.0])
    assert close(plain.vector, [23.2, 10.6, -180.0])


# --- Krum and Multi-Krum --------------------------------------------------------------------

# a, b, c, d close together, e far away; every row shifted by (1, 2, 3) so no answer is 0.
# Squared distances (the shift cancels):
#   ab 1  ac 1  ad 4  ae 300
#   bc 2  bd 5  be 281
#   cd 5  ce 281
#   de 264
# Scores with n - f - 2 = 2 nearest others (f = 1):
#   a 1+1=2   b 1+2=3   c 1+2=3   d 4+5=9   e 264+281=545
KRUM_ROWS = [
    [1.0, 2.0, 3.0],  # a
    [2.0, 2.0, 3.0],  # b
    [1.0, 3.0, 3.0],  # c
    [1.0, 2.0, 5.0],  # d
    [11.0, 12.0, 13.0],  # e
]


def test_krum_scores_by_hand() -> None:
    x = torch.tensor(KRUM_ROWS, dtype=torch.float64)
    distances = torch.cdist(x, x).square()

    scores = krum_scores(distances, f=1)

    assert torch.allclose(scores, torch.tensor([2.0, 3.0, 3.0, 9.0, 545.0], dtype=torch.float64))


def test_krum_picks_the_best_scored_row_and_discards_the_rest() -> None:
    result = aggregate("krum", KRUM_ROWS, [1.0, 5.0, 5.0, 5.0, 5.0], f=1)

    assert close(result.vector, [1.0, 2.0, 3.0])  # a; its small weight does not matter
    assert result.discarded == (1, 2, 3, 4)


def test_multi_krum_averages_the_m_best_rows_by_weight() -> None:
    # m = 3 picks a, b, c (scores 2, 3, 3); weights 1, 2, 1: (a + 2b + c) / 4
    # = ((1,2,3) + (4,4,6) + (1,3,3)) / 4 = (1.5, 2.25, 3).
    result = aggregate("multi_krum", KRUM_ROWS, [1.0, 2.0, 1.0, 1.0, 1.0], f=1, m=3)

    assert close(result.vector, [1.5, 2.25, 3.0])
    assert result.discarded == (3, 4)


def test_multi_krum_defaults_to_n_minus_f_rows() -> None:
    # m = n - f = 4 picks a, b, c, d: ((1,2,3) + (2,2,3) + (1,3,3) + (1,2,5)) / 4.
    result = aggregate("multi_krum", KRUM_ROWS, f=1)

    assert close(result.vector, [1.25, 2.25, 3.5])
    assert result.discarded == (4,)


def test_multi_krum_breaks_score_ties_by_row_order() -> None:
    # m = 2: a (2), then b and c tie at 3; b comes first. (a + b) / 2.
    result = aggregate("multi_krum", KRUM_ROWS, f=1, m=2)

    assert close(result.vector, [1.5, 2.0, 3.0])
    assert result.discarded == (2, 3, 4)


def test_krum_with_a_zero_weight_best_row_returns_that_row() -> None:
    # The check on inputs allows zero weights (only their sum must be positive). Krum's
    # answer is the best row whatever its weight; a 0/0 weight normalisation must not
    # turn it into NaN.
    result = aggregate("krum", KRUM_ROWS, [0.0, 1.0, 1.0, 1.0, 1.0], f=1)

    assert close(result.vector, [1.0, 2.0, 3.0])


# --- Bulyan ---------------------------------------------------------------------------------

# Seven rows on one line: row_i = (1, 1, 1) + p_i * (1, -2, 2), with
#   p = 0, 1, 2, 50, 5, 6, 8  (row 3 is the outlier),
# so |row_i - row_j|^2 = 9 (p_i - p_j)^2 and every Krum score is 9x its value on the line.
# Repeated Krum (f = 1, n - 2f = 5 picks; neighbours = remaining - 3, at least 1), scores on
# the line:
#   7 left, 4 nbrs: p0 1+4+25+36=66  p1 1+1+16+25=43  p2 1+4+9+16=30  p5 1+9+9+16=35
#                   p6 1+4+16+25=46  p8 4+9+36+49=98  p50 huge          -> row 2 (p=2)
#   6 left, 3 nbrs: p0 1+25+36=62  p1 1+16+25=42  p5 1+9+16=26  p6 1+4+25=30  p8 4+9+49=62
#                                                                        -> row 4 (p=5)
#   5 left, 2 nbrs: p0 1+36=37  p1 1+25=26  p6 4+25=29  p8 4+49=53       -> row 1 (p=1)
#   4 left, 1 nbr:  p0 36  p6 4  p8 4  (tie: lower row first)            -> row 5 (p=6)
#   3 left, 1 nbr:  p0 64  p8 64  p50 42^2 = 1764  (tie: lower row first) -> row 0 (p=0)
# Selected p = 0, 1, 2, 5, 6; median 2; the beta = 5 - 2f = 3 closest to it: 2, 1, 0 -> 1.
# The same three rows are closest in every coordinate (the map p -> row is affine), so the
# result is (1, 1, 1) + 1 * (1, -2, 2) = (2, -1, 3). Rows 3 and 6 are never picked.
BULYAN_P = [0.0, 1.0, 2.0, 50.0, 5.0, 6.0, 8.0]


def on_line(p: list[float]) -> list[list[float]]:
    return [[1.0 + v, 1.0 - 2.0 * v, 1.0 + 2.0 * v] for v in p]


def test_bulyan_selects_by_repeated_krum_then_averages_values_closest_to_the_median() -> None:
    result = aggregate("bulyan", on_line(BULYAN_P), f=1)

    assert close(result.vector, [2.0, -1.0, 3.0])
    assert result.discarded == (3, 6)


def test_bulyan_never_takes_a_lone_outlier_for_its_last_pick() -> None:
    # The rows above with the outlier moved to row 0. The first four picks are p = 2, 5, 1, 6
    # as before; 3 rows are left, p = 50 (row 0), 0 and 8. Scored with n - f - 2 = 0
    # neighbours all three tie and the first row left, the outlier, would be picked (and an
    # honest row reported as discarded). With one neighbour: p50 1764, p0 64, p8 64 -> p = 0.
    rows = on_line([50.0, 0.0, 1.0, 2.0, 5.0, 6.0, 8.0])

    result = aggregate("bulyan", rows, f=1)

    assert close(result.vector, [2.0, -1.0, 3.0])
    assert result.discarded == (0, 6)


def test_closest_to_median_mean_chooses_per_coordinate() -> None:
    # Column 0: 0 1 2 5 6, median 2, closest three 2 1 0 -> 1.
    # Column 1: 10 -4 3 4 0, median 3, distances 7 7 0 1 3, closest 3 4 0 -> 7/3.
    x = torch.tensor([[0.0, 10.0], [1.0, -4.0], [2.0, 3.0], [5.0, 4.0], [6.0, 0.0]])

    out = closest_to_median_mean(x, keep=3)

    assert torch.allclose(out, torch.tensor([1.0, 7.0 / 3.0]))


# --- geometric median -----------------------------------------------------------------------


def test_geometric_median_of_three_collinear_points_is_the_middle_one() -> None:
    # On a line the sum of distances is minimised at the median point, (1, 1, 1).
    rows = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0]]

    result = aggregate("geometric_median", rows, f=1)

    assert close(result.vector, [1.0, 1.0, 1.0])


def test_geometric_median_of_a_square_is_its_centre() -> None:
    rows = [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 2.0, 0.0]]

    result = aggregate("geometric_median", rows, f=1)

    assert close(result.vector, [1.0, 1.0, 0.0])


def test_weighted_geometric_median_sits_on_a_heavy_enough_point() -> None:
    # x_k is the weighted geometric median iff |sum_{i != k} w_i u_ik| <= w_k, u_ik the unit
    # vector from x_k to x_i. For x_2 = (0, 3, 0): u to x_0 = (0, -1, 0), u to x_1 = (4, -3, 0)/5,
    # sum = (0.8, -1.6, 0), norm 1.79 <= w_2 = 2.
    rows = [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0]]

    result = aggregate("geometric_median", rows, [1.0, 1.0, 2.0], f=1)

    # Weiszfeld nears a vertex linearly (ratio 1.79/2 per step): 1e-4 after its iterations.
    assert torch.allclose(result.vector, torch.tensor([0.0, 3.0, 0.0]), atol=1e-4)


def smoothed_weiszfeld_fixed_point(x: torch.Tensor, nu: float = 1e-6) -> torch.Tensor:
    """The fixed point of z -> sum_i x_i / max(|z - x_i|, nu) / sum_i 1 / max(...), by
    plain float64 iteration in d (no Gram matrix, no stopping rule but a fixed 20000)."""
    z = x.mean(dim=0)
    for _ in range(20000):
        inverse = 1 / (x - z).norm(dim=1).clamp(min=nu)
        z = inverse @ x / inverse.sum()
    return z


@pytest.mark.parametrize("seed", range(6))
def test_geometric_median_stops_within_its_tolerance_of_the_fixed_point(seed: int) -> None:
    # Honest rows plus a third of far, scaled outliers: the old objective-based stopping
    # rule ended up to 9e-4 (relative to the median distance) short of the fixed point.
    g = torch.Generator().manual_seed(seed)
    n = 7 + 3 * seed
    x = torch.randn(n, 20, generator=g, dtype=torch.float64)
    x[: n // 3] = x[: n // 3] * (5 + 20 * float(torch.rand(1, generator=g))) + 5
    fixed = smoothed_weiszfeld_fixed_point(x)
    scale = float((x - fixed).norm(dim=1).median())

    result = aggregate("geometric_median", x.tolist(), f=n // 3)

    assert float((result.vector.double() - fixed).norm()) <= 1e-5 * scale


# --- centred clipping -----------------------------------------------------------------------

# Distances to the centre 0: |(3,4,0)| = 5, |(0,0,1)| = 1, |(0,6,8)| = 10.
CC_ROWS = [[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 6.0, 8.0]]


def test_centered_clipping_from_zero_clips_each_difference_to_tau() -> None:
    # tau = 2: factors 2/5, 1, 2/10. One iteration: v = 0 + (1/3) * sum factor_i * x_i
    # = (1/3) * ((1.2, 1.6, 0) + (0, 0, 1) + (0, 1.2, 1.6)) = (0.4, 14/15, 13/15).
    result = aggregate("centered_clipping", CC_ROWS, f=1, tau=2.0)

    assert close(result.vector, [0.4, 14.0 / 15.0, 13.0 / 15.0])
    assert dict(result.scaled) == pytest.approx({0: 0.4, 2: 0.2})
    assert torch.equal(result.state[STATE_KEY], result.vector)


def test_centered_clipping_radius_is_tau_scale_times_the_median_distance() -> None:
    # Distances 5, 1, 10, median 5. tau_scale 1: radius 5, only row 2 clipped (factor 0.5);
    # tau_scale 2: radius 10, none clipped and the result is the plain mean.
    one = aggregate("centered_clipping", CC_ROWS, f=1)
    two = aggregate("centered_clipping", CC_ROWS, f=1, tau_scale=2.0)

    assert dict(one.scaled) == pytest.approx({2: 0.5})
    assert close(one.vector, [1.0, 7.0 / 3.0, 5.0 / 3.0])
    assert dict(two.scaled) == {} and close(two.vector, [1.0, 10.0 / 3.0, 3.0])


def test_centered_clipping_starts_from_the_carried_centre() -> None:
    # Centre v = (1, 2, 3); differences x_i - v = (3, 0, 4), (0, 1, 0), (-6, 0, 8), lengths
    # 5, 1, 10; tau = 2: factors 0.4, 1, 0.2. Step (1/3) * ((1.2, 0, 1.6) + (0, 1, 0) +
    # (-1.2, 0, 1.6)) = (0, 1/3, 16/15); new centre (1, 7/3, 61/15).
    rows = [[4.0, 2.0, 7.0], [1.0, 3.0, 3.0], [-5.0, 2.0, 11.0]]
    context = RoundContext(state={STATE_KEY: torch.tensor([1.0, 2.0, 3.0])})

    result = aggregate("centered_clipping", rows, f=1, context=context, tau=2.0)

    assert close(result.vector, [1.0, 7.0 / 3.0, 61.0 / 15.0])
    assert close(result.state[STATE_KEY], [1.0, 7.0 / 3.0, 61.0 / 15.0])
    assert dict(result.scaled) == pytest.approx({0: 0.4, 2: 0.2})


def test_centered_clipping_without_momentum_ignores_the_carried_centre() -> None:
    context = RoundContext(state={STATE_KEY: torch.tensor([1.0, 2.0, 3.0])})

    result = aggregate("centered_clipping", CC_ROWS, f=1, context=context, tau=2.0, momentum=False)

    assert close(result.vector, [0.4, 14.0 / 15.0, 13.0 / 15.0])


def test_centered_clipping_default_tau_is_the_median_distance() -> None:
    # Distances 5, 1, 10 -> tau = 5: only row 2 is clipped, by 1/2:
    # (1/3) * ((3, 4, 0) + (0, 0, 1) + (0, 3, 4)) = (1, 7/3, 5/3).
    result = aggregate("centered_clipping", CC_ROWS, f=1)

    assert close(result.vector, [1.0, 7.0 / 3.0, 5.0 / 3.0])
    assert dict(result.scaled) == pytest.approx({2: 0.5})


def test_centered_clipping_weights_the_clipped_differences() -> None:
    # Weights 2, 1, 1 -> shares 1/2, 1/4, 1/4; tau = 2 as above:
    # 0.5 (1.2, 1.6, 0) + 0.25 (0, 0, 1) + 0.25 (0, 1.2, 1.6) = (0.6, 1.1, 0.65).
    result = aggregate("centered_clipping", CC_ROWS, [2.0, 1.0, 1.0], f=1, tau=2.0)

    assert close(result.vector, [0.6, 1.1, 0.65])


def test_centered_clipping_with_a_wide_radius_is_the_mean() -> None:
    result = aggregate("centered_clipping", CC_ROWS, f=1, tau=100.0, iterations=3)

    assert close(result.vector, [1.0, 10.0 / 3.0, 3.0])
    assert dict(result.scaled) == {}


# --- the mean behind a pipeline -------------------------------------------------------------


def test_fedavg_alone_is_streaming_and_behind_a_step_is_the_same_weighted_mean() -> None:
    generator = torch.Generator().manual_seed(5)
    updates = torch.randn(6, 4, generator=generator)
    weights = torch.rand(6, generator=generator) + 0.1
    wide_clip = StepConfig(name="clipping", params={"mode": "static", "threshold": 1e6})
    stacked = build_aggregator(AggregationConfig(name="fedavg", pre=(wide_clip,)))
    streaming = build_aggregator("fedavg")
    assert isinstance(stacked, Pipeline) and isinstance(streaming, FedAvg)

    streaming.begin(4)
    for row, weight in zip(updates, weights.tolist(), strict=True):
        streaming.add([(0, row)], weight)
    expected = streaming.finish()
    result = stacked.aggregate(updates, weights)

    assert torch.allclose(result.vector, expected, atol=1e-6)
    assert result.discarded == () and dict(result.scaled) == {}
