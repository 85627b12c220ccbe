"""Pre-aggregation steps (clipping, nearest-neighbour mixing, bucketing) and pipelines of
steps and a rule, with results and discard/scale reports worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from phalanx.aggregation import Aggregate, Pipeline, RoundContext, build_aggregator
from phalanx.aggregation.krum import krum_select
from phalanx.aggregation.pre.bucketing import Bucketing, BucketingParams, bucket_matrix
from phalanx.aggregation.pre.clipping import arc_threshold
from phalanx.aggregation.pre.nnm import nnm_matrix
from phalanx.aggregation.rows import Rows
from phalanx.config import AggregationConfig, StepConfig
from phalanx.core.rng import torch_rng


def step(name: str, **params: Any) -> StepConfig:
    return StepConfig(name=name, params=params)


def run(
    name: str,
    rows: list[list[float]] | torch.Tensor,
    weights: list[float] | None = None,
    *,
    pre: tuple[StepConfig, ...],
    f: int = 0,
    context: RoundContext | None = None,
    **params: Any,
) -> Aggregate:
    aggregator = build_aggregator(AggregationConfig(name=name, f=f, params=params, pre=pre))
    updates = torch.as_tensor(rows, dtype=torch.float32)
    w = torch.ones(updates.shape[0]) if weights is None else torch.tensor(weights)
    return aggregator.aggregate(updates, w, context)


def close(actual: torch.Tensor, expected: list[float], atol: float = 1e-5) -> bool:
    return torch.allclose(actual, torch.tensor(expected), atol=atol, rtol=1e-6)


# --- clipping -------------------------------------------------------------------------------

# Norms 5, 1, 10.
CLIP_ROWS = [[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 6.0, 8.0]]


def test_static_clipping_scales_long_rows_down_to_the_threshold() -> None:
    # threshold 2: factors 2/5, 1, 2/10 -> rows (1.2, 1.6, 0), (0, 0, 1), (0, 1.2, 1.6).
    # Weights 2, 1, 1: ((2.4, 3.2, 0) + (0, 0, 1) + (0, 1.2, 1.6)) / 4 = (0.6, 1.1, 0.65).
    result = run(
        "fedavg", CLIP_ROWS, [2.0, 1.0, 1.0], pre=(step("clipping", mode="static", threshold=2.0),)
    )

    assert close(result.vector, [0.6, 1.1, 0.65])
    assert dict(result.scaled) == pytest.approx({0: 0.4, 2: 0.2})
    assert result.discarded == ()


def test_static_clipping_leaves_short_rows_alone() -> None:
    result = run("fedavg", CLIP_ROWS, pre=(step("clipping", mode="static", threshold=10.0),))

    assert close(result.vector, [1.0, 10.0 / 3.0, 3.0])
    assert dict(result.scaled) == {}


def test_arc_threshold_is_the_norm_after_the_k_longest() -> None:
    # k = floor(2 (f/n) (n - f)); norms sorted descending 10 4 3 2 1.
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)

    assert arc_threshold(norms, 0) == math.inf  # k = 0: nothing clipped
    assert arc_threshold(norms, 1) == 4.0  # k = floor(2 * 1/5 * 4) = floor(1.6) = 1
    assert arc_threshold(norms, 2) == 3.0  # k = floor(2 * 2/5 * 3) = floor(2.4) = 2
    assert arc_threshold(norms[:3], 1) == 2.0  # n = 3: k = floor(2 * 1/3 * 2) = 1


# Norms 1, 2, 3, 4, 10.
ARC_ROWS = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 2.0, 0.0, 0.0],
    [0.0, 0.0, 3.0, 0.0],
    [0.0, 0.0, 0.0, 4.0],
    [6.0, 0.0, 0.0, 8.0],
]


def test_adaptive_clipping_clips_the_k_longest_rows() -> None:
    # f = 1: k = 1, the longest row (norm 10) is clipped to the next norm, 4: factor 0.4,
    # (6, 0, 0, 8) -> (2.4, 0, 0, 3.2). Mean: (1 + 2.4, 2, 3, 4 + 3.2) / 5.
    result = run("fedavg", ARC_ROWS, pre=(step("clipping"),), f=1)

    assert close(result.vector, [0.68, 0.4, 0.6, 1.44])
    assert dict(result.scaled) == pytest.approx({4: 0.4})


def test_adaptive_clipping_with_more_byzantine_rows_clips_more() -> None:
    # f = 2: k = 2, the rows of norm 10 and 4 are clipped to 3: factors 0.3 and 0.75,
    # (1.8, 0, 0, 2.4) and (0, 0, 0, 3). Mean: (1 + 1.8, 2, 3, 3 + 2.4) / 5.
    result = run("fedavg", ARC_ROWS, pre=(step("clipping", mode="adaptive"),), f=2)

    assert close(result.vector, [0.56, 0.4, 0.6, 1.08])
    assert dict(result.scaled) == pytest.approx({3: 0.75, 4: 0.3})


# --- nearest-neighbour mixing ---------------------------------------------------------------

# Squared distances: 01 4, 02 9, 03 144, 12 13, 13 148, 23 153. With f = 1 each row averages
# its n - f = 3 nearest rows, itself included:
#   row 0: 0, 1, 2   row 1: 1, 0, 2   row 2: 2, 0, 1   row 3: 3, 0, 1
# so rows 0-2 become (0+2+0, 0+0+3, 0)/3 = (2/3, 1, 0) and row 3 (0+2+0, 0, 12)/3 = (2/3, 0, 4).
NNM_ROWS = [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 12.0]]


def test_nnm_matrix_by_hand() -> None:
    x = torch.tensor(NNM_ROWS, dtype=torch.float64)
    third = 1.0 / 3.0
    expected = torch.tensor(
        [[third, third, third, 0.0]] * 3 + [[third, third, 0.0, third]], dtype=torch.float64
    )

    matrix = nnm_matrix(torch.cdist(x, x).square(), f=1)

    assert torch.allclose(matrix, expected)


def test_nnm_then_mean() -> None:
    # (3 (2/3, 1, 0) + (2/3, 0, 4)) / 4 = (2/3, 3/4, 1).
    result = run("fedavg", NNM_ROWS, pre=(step("nnm"),), f=1)

    assert close(result.vector, [2.0 / 3.0, 0.75, 1.0])


def test_nnm_then_trimmed_mean() -> None:
    # Mixed rows (2/3, 1, 0) x3 and (2/3, 0, 4); trim 1 each end of 4 keeps the middle two:
    # column 0 -> 2/3; column 1 sorted 0 1 1 1 -> 1; column 2 sorted 0 0 0 4 -> 0.
    aggregator = build_aggregator(AggregationConfig(name="trimmed_mean", f=1, pre=(step("nnm"),)))

    result = aggregator.aggregate(torch.tensor(NNM_ROWS), torch.ones(4))

    assert aggregator.name == "nnm > trimmed_mean"
    assert close(result.vector, [2.0 / 3.0, 1.0, 0.0])
    assert result.discarded == () and dict(result.scaled) == {}


def test_nnm_with_f_zero_changes_nothing() -> None:
    result = run("fedavg", NNM_ROWS, pre=(step("nnm"),), f=0)

    assert close(result.vector, [0.5, 0.75, 3.0])


# --- bucketing ------------------------------------------------------------------------------

BUCKET_ROWS = torch.tensor(
    [
        [1.0, -3.0, 0.5],
        [2.0, 8.0, -1.0],
        [4.0, 1.0, 2.0],
        [8.0, 0.0, 7.0],
        [16.0, -5.0, 3.0],
        [32.0, 2.0, -4.0],
    ]
)


def buckets(seed: int, round_index: int, n: int, size: int) -> list[list[int]]:
    """The buckets bucketing must form: the same draw from the (seed, round) stream."""
    order = torch.randperm(
        n, generator=torch_rng(seed, "aggregation.bucketing", round_index)
    ).tolist()
    return [order[start : start + size] for start in range(0, n, size)]


def test_bucketing_then_median_takes_the_median_of_bucket_means() -> None:
    # n = 5, size 2: buckets of 2, 2 and 1 rows from the round's permutation; the median of
    # three bucket means is the middle one per coordinate.
    rows = BUCKET_ROWS[:5]
    context = RoundContext(seed=7, round_index=3)
    means = torch.stack([rows[b].mean(dim=0) for b in buckets(7, 3, 5, 2)])

    result = run("median", rows, pre=(step("bucketing", size=2),), f=1, context=context)

    assert torch.allclose(result.vector, means.sort(dim=0).values[1])


def test_bucketing_weighs_a_bucket_by_its_members_total() -> None:
    # A bucket's row is the plain mean of its members; its weight is their summed weight.
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    context = RoundContext(seed=1, round_index=0)
    groups = buckets(1, 0, 6, 2)
    means = torch.stack([BUCKET_ROWS[b].mean(dim=0) for b in groups])
    totals = torch.stack([weights[b].sum() for b in groups])

    result = run(
        "fedavg", BUCKET_ROWS, weights.tolist(), pre=(step("bucketing", size=2),), context=context
    )

    assert torch.allclose(result.vector, totals @ means / totals.sum())


def test_bucketing_reports_what_the_rule_did_for_every_member_of_a_bucket() -> None:
    # Only row 4 is non-zero (length 10). Its bucket's mean has length 10 / |bucket|; static
    # clipping to 1 scales that bucket by |bucket| / 10, reported for each of its members.
    rows = torch.zeros(5, 4)
    rows[4, 0] = 10.0
    context = RoundContext(seed=2, round_index=5)
    (bucket,) = [b for b in buckets(2, 5, 5, 2) if 4 in b]
    clip = step("clipping", mode="static", threshold=1.0)

    result = run("fedavg", rows, pre=(step("bucketing", size=2), clip), context=context)

    assert dict(result.scaled) == pytest.approx({row: len(bucket) / 10 for row in bucket})


def test_bucketing_then_krum_discards_every_member_of_an_unpicked_bucket() -> None:
    # n = 6, size 2: three bucket means; Krum (f = 0, one neighbour) keeps one bucket and
    # discards the four rows of the other two.
    context = RoundContext(seed=1, round_index=0)
    groups = buckets(1, 0, 6, 2)
    means = torch.stack([BUCKET_ROWS[b].mean(dim=0) for b in groups]).double()
    (best,) = krum_select(torch.cdist(means, means).square(), 0, 1).tolist()

    result = run("krum", BUCKET_ROWS, pre=(step("bucketing", size=2),), context=context)

    assert torch.allclose(result.vector, means[best].float())
    assert result.discarded == tuple(sorted(set(range(6)) - set(groups[best])))


def test_bucketing_of_size_one_is_the_identity_and_of_size_n_is_the_mean() -> None:
    single = run("median", BUCKET_ROWS[:5], pre=(step("bucketing", size=1),), f=1)
    whole = run("fedavg", BUCKET_ROWS, pre=(step("bucketing", size=6),))

    assert torch.allclose(single.vector, BUCKET_ROWS[:5].median(dim=0).values)
    assert torch.allclose(whole.vector, BUCKET_ROWS.mean(dim=0))


def test_bucket_matrix_averages_exactly_the_rows_of_each_slice_of_the_order() -> None:
    matrix = bucket_matrix([2, 0, 3, 1, 4], 2, 5)

    assert matrix.tolist() == [
        [0.5, 0.0, 0.5, 0.0, 0.0],
        [0.0, 0.5, 0.0, 0.5, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ]


@pytest.mark.parametrize(("n", "size"), [(5, 2), (7, 3), (6, 2)])
def test_bucketing_groups_the_rows_of_the_rounds_permutation(n: int, size: int) -> None:
    # Identity rows: bucket row b is 1/|b| exactly at its members' columns, so a wrong
    # grouping (wrong members, a row twice, a row lost, wrong owners) cannot go unseen,
    # as it can behind a rule that averages the bucket means back together.
    context = RoundContext(seed=3, round_index=11)
    rows = Rows.of(torch.eye(n), torch.ones(n))
    bucketed = Bucketing(BucketingParams(size=size))(rows, 0, context)

    expected = buckets(3, 11, n, size)
    assert [len(b) for b in expected] == [size] * (n // size) + ([n % size] if n % size else [])
    assert sorted(c for b in expected for c in b) == list(range(n))
    means = torch.zeros(len(expected), n)
    for row, members in enumerate(expected):
        means[row, members] = 1.0 / len(members)
    assert torch.equal(bucketed.materialise(), means)
    assert bucketed.owners == tuple(tuple(sorted(b)) for b in expected)
    other = Bucketing(BucketingParams(size=size))(rows, 0, RoundContext(seed=3, round_index=12))
    assert not torch.equal(other.materialise(), means)  # a new round, a new grouping


# --- clipping in front of Krum --------------------------------------------------------------

# Static clipping to 2: row 2 (0, 0, 4) -> (0, 0, 2), factor 0.5; row 4 (300, 400, 0), length
# 500 -> (1.2, 1.6, 0), factor 0.004. Squared distances after clipping:
#   01 1  02 5  03 1  04 2.6   12 6  13 2  14 0.4   23 2  24 8   34 3.6
# Krum scores (f = 1, 2 nearest): r0 1+1=2, r1 0.4+1=1.4, r2 2+5=7, r3 1+2=3, r4 0.4+2.6=3.
KRUM_CLIP_ROWS = [
    [1.0, 0.0, 0.0],
    [1.0, 1.0, 0.0],
    [0.0, 0.0, 4.0],
    [1.0, 0.0, 1.0],
    [300.0, 400.0, 0.0],
]


def test_clipping_then_krum_reports_clipped_and_discarded_rows() -> None:
    clip = step("clipping", mode="static", threshold=2.0)

    result = run("krum", KRUM_CLIP_ROWS, pre=(clip,), f=1)

    assert close(result.vector, [1.0, 1.0, 0.0])  # row 1
    assert result.discarded == (0, 2, 3, 4)
    assert dict(result.scaled) == pytest.approx({2: 0.5, 4: 0.004})


def test_clipping_then_multi_krum_averages_the_best_clipped_rows() -> None:
    # m = 2: rows 1 (1.4) and 0 (2): ((1, 1, 0) + (1, 0, 0)) / 2.
    clip = step("clipping", mode="static", threshold=2.0)

    result = run("multi_krum", KRUM_CLIP_ROWS, pre=(clip,), f=1, m=2)

    assert close(result.vector, [1.0, 0.5, 0.0])
    assert result.discarded == (2, 3, 4)


def test_a_pipeline_is_named_after_its_parts_in_order() -> None:
    config = AggregationConfig(
        name="krum", f=1, pre=(step("clipping"), step("nnm"), step("bucketing", size=2))
    )

    aggregator = build_aggregator(config)

    assert isinstance(aggregator, Pipeline)
    assert aggregator.name == "clipping > nnm > bucketing > krum"


def test_bucketing_shrinks_its_buckets_so_the_rule_still_gets_the_rows_it_needs() -> None:
    """20 clients, f = 4, centred clipping (2f + 1 = 9): buckets of 2 leave 10 rows, but a
    round where validation refused some has too few; smaller buckets keep it alive."""
    config = AggregationConfig(name="centered_clipping", f=4, pre=(step("bucketing", size=2),))
    pipeline = build_aggregator(config)
    assert isinstance(pipeline, Pipeline)
    bucketing = pipeline.steps[0]
    assert isinstance(bucketing, Bucketing)
    # ceil(n / 2) buckets while that is at least 9, else buckets of one row
    assert [bucketing.size_for(n, 4) for n in (20, 17, 16, 9, 5)] == [2, 2, 1, 1, 1]
    assert (bucketing.size_for(13, 3), bucketing.size_for(12, 3)) == (2, 1)  # 7 needed

    rows = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))
    bucketed = pipeline.aggregate(rows, torch.ones(12), RoundContext(seed=1, round_index=2))
    alone = build_aggregator(AggregationConfig(name="centered_clipping", f=4))
    plain = alone.aggregate(rows, torch.ones(12), RoundContext(seed=1, round_index=2))
    assert torch.equal(bucketed.vector, plain.vector)  # buckets of one row: the rows


def test_a_bucketing_step_with_nothing_after_it_that_takes_f_keeps_its_size() -> None:
    pipeline = build_aggregator(AggregationConfig(name="fedavg", pre=(step("bucketing", size=3),)))
    assert isinstance(pipeline, Pipeline) and isinstance(pipeline.steps[0], Bucketing)
    assert pipeline.steps[0].size_for(7, 2) == 3
