"""Properties every robust aggregator should have, checked with hypothesis.

* Permutation invariance: permuting rows and weights together permutes nothing in the
  result, and the discard/scale reports name the same rows. Selection rules (Krum,
  Multi-Krum, Bulyan, NNM's neighbour sets) break exact ties by row order, so for them the
  data are Gaussian (general position) and examples whose reference scores have a near-tie
  at a selection boundary are excluded with ``assume``. Bulyan is checked with f = 3
  (n = 15): with f <= 2 its last picks score with one neighbour, where the closest pair
  always ties, and the result does depend on row order (see the strict xfail below).
  Bucketing is left out: its draw shuffles row *positions*, so a permuted input is bucketed
  differently (invariant in distribution only).
* Translation equivariance: agg(x + t) = agg(x) + t, to a float32 tolerance relative to
  |x| + |t|. Centred clipping only when its start is translated too (the carried centre
  c -> c + t); from zero it is not equivariant (clipping is towards the origin), nor are the
  norm-based clipping steps, so those are left out.
* Equal rows: every rule returns that row (centred clipping with tau = median distance; a
  fixed tau moves at most tau from the start by design).
* Bounded influence: f rows moved to +-1e9 (any sign pattern), equal weights. Median,
  trimmed mean, Krum, Multi-Krum (m <= n - f), Bulyan, NNM > trimmed mean and bucketing >
  median stay inside the honest rows' bounding box (Krum-type rules only ever pick honest
  rows when outliers are that far; the coordinate-wise ones have at most f of n >= 2f + 1
  values outside the honest range). The others stay within a radius derived in their test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from phalanx.aggregation import Aggregator, RoundContext, build_aggregator
from phalanx.aggregation.centered_clipping import STATE_KEY
from phalanx.aggregation.krum import krum_scores
from phalanx.config import AggregationConfig, StepConfig

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Key = Callable[[torch.Tensor], object]  # a selection's identity, None when near a tie


def sq_distances(x: torch.Tensor) -> torch.Tensor:
    x64 = x.double()
    return (x64[:, None, :] - x64[None, :, :]).square().sum(dim=2)


def margin(values: torch.Tensor) -> float:
    return 1e-6 * (1.0 + float(values.abs().max()))


def krum_key(f: int, m: int | None) -> Key:
    """The set Multi-Krum picks, or None when the m-th and (m+1)-th scores nearly tie."""

    def key(x: torch.Tensor) -> object:
        scores = krum_scores(sq_distances(x), f)
        ordered = scores.sort().values
        picks = x.shape[0] - f if m is None else m
        if picks < len(ordered) and float(ordered[picks] - ordered[picks - 1]) <= margin(scores):
            return None
        return frozenset(torch.argsort(scores, stable=True)[:picks].tolist())

    return key


def first_best(scores: torch.Tensor) -> int | None:
    """The first minimum, or None when another score is close to it without equalling it
    (an exact tie is the same in every translated copy and broken by row order)."""
    best = float(scores.min())
    others = scores[scores != best]
    if len(others) and float(others.min()) - best <= margin(scores):
        return None
    return int(torch.argmin(scores))


def bulyan_key(f: int) -> Key:
    """Bulyan's picks and, per coordinate, the values kept around the median; None near a
    tie in either stage."""

    def key(x: torch.Tensor) -> object:
        distances, remaining, chosen = sq_distances(x), list(range(x.shape[0])), []
        for _ in range(x.shape[0] - 2 * f):
            best = first_best(krum_scores(distances[remaining][:, remaining], f))
            if best is None:
                return None
            chosen.append(remaining.pop(best))
        values = x[sorted(chosen)].double()
        keep = len(chosen) - 2 * f
        spread = (values - values.median(dim=0).values).abs().sort(dim=0).values
        if keep < len(chosen) and bool((spread[keep] - spread[keep - 1] <= margin(spread)).any()):
            return None
        return frozenset(chosen)

    return key


def nnm_key(f: int) -> Key:
    """Every row's n - f nearest rows, or None when a neighbourhood's edge nearly ties."""

    def key(x: torch.Tensor) -> object:
        distances = sq_distances(x)
        keep = x.shape[0] - f
        ordered = distances.sort(dim=1).values
        if bool((ordered[:, keep] - ordered[:, keep - 1] <= margin(distances)).any()):
            return None
        return tuple(frozenset(row[:keep].tolist()) for row in distances.argsort(dim=1))

    return key


@dataclass(frozen=True)
class Case:
    label: str
    config: AggregationConfig
    sizes: tuple[int, int]  # smallest and largest n drawn
    key: Key | None = None  # selection rules: data in general position, ties excluded
    atol: float = 1e-5  # per unit of |x| + |t|
    state: bool = False  # translate the carried centre with the rows
    translates: bool = True
    permutes: bool = True
    equal_rows: bool = True  # a fixed clipping radius moves at most tau from the start

    def build(self) -> Aggregator:
        return build_aggregator(self.config)


def cfg(name: str, f: int, *pre: StepConfig, **params: float | bool) -> AggregationConfig:
    return AggregationConfig(name=name, f=f, params=params, pre=pre)


NNM, ARC = StepConfig(name="nnm"), StepConfig(name="clipping")
BUCKETS = StepConfig(name="bucketing", params={"size": 2})

CASES = [
    Case("median", cfg("median", 1), (3, 6)),
    Case("trimmed_mean", cfg("trimmed_mean", 1), (3, 6)),
    Case("krum", cfg("krum", 1), (5, 7), key=krum_key(1, 1)),
    Case("multi_krum", cfg("multi_krum", 1), (5, 7), key=krum_key(1, None)),
    Case("multi_krum m=2", cfg("multi_krum", 1, m=2), (5, 7), key=krum_key(1, 2)),
    Case("bulyan f=1", cfg("bulyan", 1), (7, 8), key=bulyan_key(1), permutes=False),
    Case("bulyan f=3", cfg("bulyan", 3), (15, 15), key=bulyan_key(3)),
    Case("geometric_median", cfg("geometric_median", 1), (3, 6), atol=1e-3),
    Case("centered_clipping", cfg("centered_clipping", 1), (3, 6), state=True),
    Case(
        "centered_clipping tau=1 x3",
        cfg("centered_clipping", 1, tau=1.0, iterations=3),
        (3, 6),
        state=True,
        equal_rows=False,
    ),
    Case("nnm > trimmed_mean", cfg("trimmed_mean", 1, NNM), (3, 6), key=nnm_key(1)),
    Case("clipping > fedavg", cfg("fedavg", 1, ARC), (3, 6), translates=False),
    Case("bucketing > median", cfg("median", 1, BUCKETS), (5, 7), permutes=False),
]


def ids(case: Case) -> str:
    return case.label


@st.composite
def stacks(draw: st.DrawFn, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """n x d rows and positive weights: hypothesis-chosen values (with their repeats and
    zeros) for continuous rules, Gaussian rows for selection rules."""
    n = draw(st.integers(*case.sizes))
    d = draw(st.integers(1, 4))
    if case.key is None and draw(st.booleans()):
        values = st.floats(-10, 10, width=32)
        x = torch.tensor(draw(st.lists(values, min_size=n * d, max_size=n * d))).view(n, d)
    else:
        generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        x = torch.randn(n, d, generator=generator) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    weights = draw(st.lists(st.floats(0.5, 4.0), min_size=n, max_size=n))
    return x, torch.tensor(weights)


def vectors(d: int, bound: float) -> st.SearchStrategy[torch.Tensor]:
    values = st.lists(st.floats(-bound, bound, width=32), min_size=d, max_size=d)
    return values.map(torch.tensor)


def close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return bool(((a - b).abs() <= atol).all())


# --- permutation invariance -----------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.permutes], ids=ids)
@SETTINGS
@given(data=st.data())
def test_permuting_rows_and_weights_changes_nothing(case: Case, data: st.DataObject) -> None:
    x, w = data.draw(stacks(case))
    order = data.draw(st.permutations(range(x.shape[0])))
    if case.key is not None:
        assume(case.key(x) is not None)
    aggregator = case.build()

    a = aggregator.aggregate(x, w)
    b = aggregator.aggregate(x[order], w[order])

    assert close(a.vector, b.vector, case.atol * (1 + float(x.abs().max())))
    assert {order[i] for i in b.discarded} == set(a.discarded)
    assert {order[i]: s for i, s in b.scaled.items()} == pytest.approx(dict(a.scaled))


@pytest.mark.xfail(strict=True, reason="Bulyan with f <= 2 breaks closest-pair ties by row order")
def test_bulyan_with_f_1_depends_on_row_order() -> None:
    # Rows (1,1,1) + p (1,-2,2), p = 0 1 2 50 5 6 8 (test_agg_rules): result p = 1. Moved to
    # the end, the row p = 0 loses the 1-neighbour tie with p = 8 at the last pick; selected
    # p = 1 2 5 6 8, median 5, kept 5 6 8: p = 19/3.
    p = torch.tensor([0.0, 1.0, 2.0, 50.0, 5.0, 6.0, 8.0])
    x = torch.tensor([1.0, 1.0, 1.0]) + p[:, None] * torch.tensor([1.0, -2.0, 2.0])
    order = [1, 2, 3, 4, 5, 6, 0]
    aggregator = build_aggregator(cfg("bulyan", 1))

    a = aggregator.aggregate(x, torch.ones(7)).vector
    b = aggregator.aggregate(x[order], torch.ones(7)).vector

    assert torch.allclose(a, b)


# --- translation equivariance ---------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.translates], ids=ids)
@SETTINGS
@given(data=st.data())
def test_translating_the_rows_translates_the_result(case: Case, data: st.DataObject) -> None:
    x, w = data.draw(stacks(case))
    t = data.draw(vectors(x.shape[1], 100.0))
    moved = x + t
    if case.key is not None:
        key = case.key(x)
        assume(key is not None and key == case.key(moved))
    states: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] = ({}, {})
    if case.state:
        centre = data.draw(vectors(x.shape[1], 10.0))
        states = ({STATE_KEY: centre}, {STATE_KEY: centre + t})
    aggregator = case.build()

    a = aggregator.aggregate(x, w, RoundContext(seed=1, round_index=2, state=states[0])).vector
    b = aggregator.aggregate(moved, w, RoundContext(seed=1, round_index=2, state=states[1])).vector

    scale = 1 + float(x.abs().max()) + float(t.abs().max())
    assert close(b, a + t, case.atol * scale)


@pytest.mark.parametrize("name", ["centered_clipping", "geometric_median", "krum"])
def test_far_from_the_origin_distances_keep_the_honest_spread(name: str) -> None:
    # Rows of spread ~1 translated by 1e4: |x|^2 ~ 4e8, so |x|^2 - 2 x.v + |v|^2 must be
    # accumulated in float64 (a float32 dot is off by ~4e8 x 6e-8 = 24 in a squared distance
    # of ~1). The result may differ only by float32 rounding of x + t: a few ulp(1e4) ~ 1e-3.
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(5, 4, generator=generator)
    centre = 0.5 * torch.randn(4, generator=generator)
    t = torch.full((4,), 1e4)
    aggregator = build_aggregator(
        cfg(name, 1, **({"tau": 0.8} if name == "centered_clipping" else {}))
    )

    a = aggregator.aggregate(x, torch.ones(5), RoundContext(state={STATE_KEY: centre})).vector
    b = aggregator.aggregate(x + t, torch.ones(5), RoundContext(state={STATE_KEY: centre + t}))

    assert close(b.vector, a + t, 1e-6 * float(t.abs().max()))


def test_centered_clipping_from_zero_is_neither_translation_equivariant_nor_the_mean() -> None:
    # Every row (10, 0, 0), tau = 1, momentum off: one step from 0 of at most tau -> (1, 0, 0).
    # Translated by (-10, 0, 0) every row is 0 and so is the result: not (1, 0, 0) - t... by
    # design: the fixed radius bounds the step from the start, whatever the rows agree on.
    aggregator = build_aggregator(cfg("centered_clipping", 1, tau=1.0, momentum=False))
    x = torch.tensor([[10.0, 0.0, 0.0]] * 3)

    at_ten = aggregator.aggregate(x, torch.ones(3)).vector
    at_zero = aggregator.aggregate(x - x[0], torch.ones(3)).vector

    assert torch.allclose(at_ten, torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(at_zero, torch.zeros(3))


# --- equal rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.equal_rows], ids=ids)
@SETTINGS
@given(data=st.data())
def test_equal_rows_aggregate_to_that_row(case: Case, data: st.DataObject) -> None:
    n = data.draw(st.integers(*case.sizes))
    row = data.draw(vectors(data.draw(st.integers(1, 4)), 10.0))
    weights = torch.tensor(data.draw(st.lists(st.floats(0.5, 4.0), min_size=n, max_size=n)))

    result = case.build().aggregate(row.repeat(n, 1), weights)

    assert close(result.vector, row, 1e-5 * (1 + float(row.abs().max())))
    assert dict(result.scaled) == {}


# --- bounded influence of f rows at +-1e9 ---------------------------------------------------


@st.composite
def attacked(draw: st.DrawFn, case: Case, f: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Rows with f of them (anywhere) moved to +-1e9 in every coordinate; the honest rows."""
    x, _ = draw(stacks(case))
    n, d = x.shape
    byzantine = draw(st.permutations(range(n)))[:f]
    for row in byzantine:
        signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=d, max_size=d))
        x[row] = torch.tensor(signs) * 1e9
    honest = [i for i in range(n) if i not in byzantine]
    return x, x[honest], byzantine


BOXED = [
    Case("median", cfg("median", 1), (3, 6)),
    Case("median f=2", cfg("median", 2), (5, 6)),
    Case("trimmed_mean", cfg("trimmed_mean", 1), (3, 6)),
    Case("trimmed_mean f=2", cfg("trimmed_mean", 2), (5, 6)),
    Case("krum", cfg("krum", 1), (5, 7)),
    Case("multi_krum", cfg("multi_krum", 1), (5, 7)),
    Case("multi_krum f=2", cfg("multi_krum", 2), (7, 8)),
    Case("bulyan", cfg("bulyan", 1), (7, 8)),
    Case("nnm > trimmed_mean", cfg("trimmed_mean", 1, NNM), (3, 6)),
    Case("bucketing > median", cfg("median", 1, BUCKETS), (5, 7)),
]


@pytest.mark.parametrize("case", BOXED, ids=ids)
@SETTINGS
@given(data=st.data())
def test_outliers_leave_the_result_inside_the_honest_bounding_box(
    case: Case, data: st.DataObject
) -> None:
    x, honest, byzantine = data.draw(attacked(case, case.config.f))

    result = case.build().aggregate(x, torch.ones(x.shape[0]), RoundContext(seed=4))

    slack = 1e-5 * (1 + float(honest.abs().max()))
    assert bool((result.vector >= honest.min(dim=0).values - slack).all())
    assert bool((result.vector <= honest.max(dim=0).values + slack).all())
    if case.config.name in ("krum", "multi_krum", "bulyan"):
        assert set(byzantine) <= set(result.discarded)


@pytest.mark.parametrize(("f", "sizes"), [(1, (3, 6)), (2, (5, 6))])
@SETTINGS
@given(data=st.data())
def test_outliers_move_the_geometric_median_a_bounded_distance(
    f: int, sizes: tuple[int, int], data: st.DataObject
) -> None:
    # With honest share h > 1/2 of the weight, z the honest mean and r the largest honest
    # distance to z: for the minimiser y, h(|y - z| - r) + sum_B w_j (|z - x_j| - |y - z|)
    # <= h r + sum_B w_j |z - x_j|, so |y - z| <= 2 h r / (2h - 1). (Smoothing and the
    # stopping rule add ~tol x the median distance: covered by a 1e-3 slack.)
    case = Case("geometric_median", cfg("geometric_median", f), sizes)
    x, honest, _ = data.draw(attacked(case, f))
    n = x.shape[0]
    h = (n - f) / n

    result = case.build().aggregate(x, torch.ones(n))

    z = honest.double().mean(dim=0)
    r = float((honest.double() - z).norm(dim=1).max())
    distance = float((result.vector.double() - z).norm())
    assert distance <= 2 * h * r / (2 * h - 1) + 1e-3 * (1 + r)


def clipped_steps(
    honest: torch.Tensor, n: int, start: torch.Tensor, tau: float, iterations: int
) -> torch.Tensor:
    """Centred clipping as if the Byzantine rows sat on the centre (contributing nothing)."""
    centre = start.double()
    for _ in range(iterations):
        differences = honest.double() - centre
        factors = (tau / differences.norm(dim=1).clamp(min=1e-300)).clamp(max=1.0)
        centre = centre + (factors[:, None] * differences).sum(dim=0) / n
    return centre


@pytest.mark.parametrize("iterations", [1, 3])
@SETTINGS
@given(data=st.data())
def test_outliers_move_centred_clipping_at_most_tau_f_over_n_per_iteration(
    iterations: int, data: st.DataObject
) -> None:
    # Each iteration a Byzantine row adds its share (1/n) of a difference clipped to tau, so
    # f of them move the centre at most tau f / n; the honest part of a step is 1-Lipschitz
    # in the centre (clipping is a projection), so K iterations stay within K tau f / n of
    # the run without them.
    f, tau = 1, 1.0
    case = Case("cc", cfg("centered_clipping", f, tau=tau, iterations=iterations), (3, 6))
    x, honest, _ = data.draw(attacked(case, f))
    start = data.draw(vectors(x.shape[1], 5.0))
    n = x.shape[0]

    result = case.build().aggregate(x, torch.ones(n), RoundContext(state={STATE_KEY: start}))

    reference = clipped_steps(honest, n, start, tau, iterations)
    distance = float((result.vector.double() - reference).norm())
    assert distance <= iterations * tau * f / n + 1e-4


@SETTINGS
@given(data=st.data())
def test_outliers_move_centred_clipping_with_the_median_radius_no_further_than_honest_rows(
    data: st.DataObject,
) -> None:
    # tau = the median distance to the start v; with f < n/2 that is at most the largest
    # honest distance R. The step is a weight-1/n sum of differences clipped to tau, so
    # |result - v| <= tau <= R.
    case = Case("cc", cfg("centered_clipping", 1), (3, 6))
    x, honest, _ = data.draw(attacked(case, 1))
    start = data.draw(vectors(x.shape[1], 5.0))

    result = case.build().aggregate(
        x, torch.ones(x.shape[0]), RoundContext(state={STATE_KEY: start})
    )

    radius = float((honest.double() - start.double()).norm(dim=1).max())
    assert float((result.vector.double() - start.double()).norm()) <= radius * (1 + 1e-5) + 1e-5


@SETTINGS
@given(data=st.data())
def test_outliers_behind_adaptive_clipping_shrink_to_honest_lengths(data: st.DataObject) -> None:
    # ARC clips the k = floor(2 f (n - f) / n) >= f longest rows (n >= 2f) to the (k+1)-th
    # longest length, an honest one: every row is then no longer than the longest honest row,
    # and so is their weighted mean.
    case = Case("arc", cfg("fedavg", 1, ARC), (3, 6))
    x, honest, byzantine = data.draw(attacked(case, 1))

    result = case.build().aggregate(x, torch.ones(x.shape[0]))

    longest = float(honest.double().norm(dim=1).max())
    assert float(result.vector.double().norm()) <= longest * (1 + 1e-5) + 1e-6
    assert set(byzantine) <= set(result.scaled)
