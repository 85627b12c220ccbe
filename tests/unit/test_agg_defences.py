"""FLAME's filter, FoolsGold's weights and DnC's spectral filter (backdoors), persistent
flags (CUSUM over rounds), and the round's f: ``effective_f``, a context's f in place of
the configured one, and the fewest rows a pipeline needs. Tiny literal rows, results
worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from phalanx.aggregation import Aggregate, Pipeline, RoundContext, build_aggregator
from phalanx.aggregation.base import effective_f
from phalanx.aggregation.pre.dnc import Dnc, DncParams, spectral_scores
from phalanx.aggregation.pre.flame import cosine_distances, majority_cluster
from phalanx.aggregation.pre.foolsgold import CLIENTS_KEY as FG_CLIENTS
from phalanx.aggregation.pre.foolsgold import HISTORY_KEY as FG_HISTORY
from phalanx.aggregation.pre.foolsgold import count_sketch, foolsgold_weights
from phalanx.aggregation.pre.persistent_flags import (
    CLIENTS_KEY,
    SCORES_KEY,
    crowd_alignment,
    cusum,
    median_alignment,
    spread,
    sum_alignment,
)
from phalanx.config import AggregationConfig, StepConfig
from phalanx.core.rng import torch_rng
from phalanx.errors import AggregationError, ConfigError


def run(
    name: str,
    rows: list[list[float]],
    *,
    pre: tuple[StepConfig, ...] = (),
    f: int = 0,
    context: RoundContext | None = None,
    **params: Any,
) -> Aggregate:
    aggregator = build_aggregator(AggregationConfig(name=name, f=f, params=params, pre=pre))
    return aggregator.aggregate(torch.tensor(rows), torch.ones(len(rows)), context)


def flame(noise: float = 0.0) -> StepConfig:
    return StepConfig(name="flame", params={"noise": noise})


# --- FLAME ----------------------------------------------------------------------------------

# Three honest updates along x, two backdoored ones along y (norms 1.005, 2.0025, 1.5033,
# 3, 3.0017; median 2.0025).
FLAME_ROWS = [
    [1.0, 0.1, 0.0],
    [2.0, 0.0, 0.1],
    [1.5, -0.1, 0.0],
    [0.0, 3.0, 0.0],
    [0.1, 3.0, 0.0],
]


def test_cosine_distances_from_the_gram_matrix() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]], dtype=torch.float64)

    distances = cosine_distances(x @ x.T)

    assert distances.tolist() == [
        [0.0, 1.0, 2.0, 1.0],
        [1.0, 0.0, 1.0, 1.0],
        [2.0, 1.0, 0.0, 1.0],
        [1.0, 1.0, 1.0, 0.0],
    ]


def test_flame_admits_the_majority_cluster_and_discards_the_other_direction() -> None:
    x = torch.tensor(FLAME_ROWS, dtype=torch.float64)
    assert majority_cluster(cosine_distances(x @ x.T)) == [0, 1, 2]

    result = run("fedavg", FLAME_ROWS, pre=(flame(),), f=2)

    assert torch.allclose(result.vector, torch.tensor([1.5, 0.0, 0.1 / 3]))
    assert result.discarded == (3, 4) and dict(result.scaled) == {}


def test_flame_clips_admitted_updates_to_the_median_norm() -> None:
    # Row 1 becomes (10, 0, 0.1), norm 10.0005: the median norm is now row 3's 3, row 1 is
    # clipped by 3 / 10.0005 and the mean of the admitted rows moves accordingly.
    rows = [list(r) for r in FLAME_ROWS]
    rows[1] = [10.0, 0.0, 0.1]
    factor = 3.0 / float(torch.tensor(rows[1]).norm())

    result = run("fedavg", rows, pre=(flame(),), f=2)

    clipped = torch.tensor(rows[1]) * factor
    expected = (torch.tensor(rows[0]) + clipped + torch.tensor(rows[2])) / 3
    assert torch.allclose(result.vector, expected, atol=1e-6)
    assert result.discarded == (3, 4) and dict(result.scaled) == pytest.approx({1: factor})


def test_flame_noise_is_lambda_times_the_median_norm_drawn_from_seed_and_round() -> None:
    context = RoundContext(seed=5, round_index=9)
    clean = run("fedavg", FLAME_ROWS, pre=(flame(),), f=2, context=context)
    noisy = run("fedavg", FLAME_ROWS, pre=(flame(0.5),), f=2, context=context)

    std = 0.5 * float(torch.tensor(FLAME_ROWS[1]).norm())
    draw = torch.randn(3, generator=torch_rng(5, "aggregation.noise", 9))
    assert torch.allclose(noisy.vector, clean.vector + std * draw)
    again = run("fedavg", FLAME_ROWS, pre=(flame(0.5),), f=2, context=context)
    assert torch.equal(noisy.vector, again.vector)


def test_flame_keeps_every_row_when_no_cluster_stands_out() -> None:
    rows = [[1.0, 0.0], [0.0, 1.0]]
    result = run("fedavg", rows, pre=(flame(),))
    assert torch.allclose(result.vector, torch.tensor([0.5, 0.5])) and result.discarded == ()


# --- persistent flags -----------------------------------------------------------------------

# Median cosine with the others: rows 0-3 -> 0 (lower median), row 4 -> -1. The population
# median is 0: row 4 falls short by 1 each round, the others by 0.
FLAG_ROWS = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
CLIENTS = (10, 11, 12, 13, 14)
PERSISTENT = StepConfig(name="persistent_flags", params={"drift": 0.05, "threshold": 1.0})


def test_median_alignment_and_one_cusum_step() -> None:
    x = torch.tensor(FLAG_ROWS, dtype=torch.float64)
    assert median_alignment(x @ x.T).tolist() == [0.0, 0.0, 0.0, 0.0, -1.0]
    step = cusum(torch.tensor([0.0, 0.5, 2.0]), torch.tensor([0.02, -1.0, 1.0]), 0.05)
    assert torch.allclose(step, torch.tensor([0.0, 0.0, 2.95]))


def test_sum_alignment_is_each_rows_cosine_with_the_sum_of_the_others() -> None:
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[6] = 0.0  # a zero row has no direction: 0, and it adds nothing to the others' sums
    expected = [
        0.0
        if i == 6
        else float(torch.nn.functional.cosine_similarity(x[i], x.sum(0) - x[i], dim=0))
        for i in range(7)
    ]
    assert sum_alignment(x @ x.T).tolist() == pytest.approx(expected)
    assert sum_alignment(x[:1] @ x[:1].T).tolist() == [0.0]  # a lone row


def test_sum_alignment_sees_a_common_direction_that_median_cosines_miss() -> None:
    # Thirty rows: a small common direction under large parts of their own (orthogonal), and
    # one row pushing the other way. Pairwise, every cosine is about +-0.01; against the sum
    # of the others the common part adds up and the row pushing back stands out by more.
    own = torch.eye(31, dtype=torch.float64)[:30] * 10.0
    common = torch.zeros(31, dtype=torch.float64)
    common[30] = 1.0
    x = own + common
    x[29] = own[29] - common
    by_rows, by_sum = median_alignment(x @ x.T), sum_alignment(x @ x.T)
    gap_rows = float(by_rows[:29].min() - by_rows[29])
    gap_sum = float(by_sum[:29].min() - by_sum[29])
    assert gap_rows == pytest.approx(0.0198, abs=1e-3)
    assert gap_sum > 4 * gap_rows
    step = StepConfig(name="persistent_flags", params={"reference": "sum", "threshold": 0.01})
    context = RoundContext(state={}, clients=tuple(range(100, 130)))
    assert run("median", x.tolist(), pre=(step,), f=1, context=context).flagged == (29,)


def test_crowd_alignment_counts_rows_of_one_direction_once_whatever_their_norms() -> None:
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[7] = 3 * x[6]  # the same direction as row 6: a crowd of two, each weighing one half
    units = x / x.norm(dim=1, keepdim=True)
    weights = 1 / ((units @ units.T) >= 0.9).sum(dim=1)
    expected = []
    for i in range(8):
        reference = sum(weights[j] * units[j] for j in range(8) if j != i)
        expected.append(float(units[i] @ reference / reference.norm()))
    assert weights.tolist()[6:] == [0.5, 0.5]
    assert crowd_alignment(x @ x.T, 0.9).tolist() == pytest.approx(expected)


def test_leaving_out_the_crowd_judges_each_colluder_against_the_rows_outside_it() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(9, 6, dtype=torch.float64, generator=generator)
    x[6:] = x[6] * torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)  # a crowd of 3
    units = x / x.norm(dim=1, keepdim=True)
    cosines = units @ units.T
    weights = 1 / (cosines >= 0.9).sum(dim=1)
    expected = []
    for i in range(9):
        reference = sum(weights[j] * units[j] for j in range(9) if cosines[i, j] < 0.9)
        expected.append(float(units[i] @ reference / reference.norm()))
    apart = crowd_alignment(x @ x.T, 0.9, leave_out_crowd=True)
    assert apart.tolist() == pytest.approx(expected)
    counted_once = crowd_alignment(x @ x.T, 0.9)
    assert apart[:6].tolist() == pytest.approx(counted_once[:6].tolist())  # crowds of one
    assert (apart[6:] < counted_once[6:]).all()  # no longer lifted by their own crowd


def test_leaving_out_the_crowd_without_the_crowd_reference_is_refused() -> None:
    step = StepConfig(name="persistent_flags", params={"leave_out_crowd": True})
    with pytest.raises(ConfigError, match="leave_out_crowd needs reference = 'crowd'"):
        build_aggregator(AggregationConfig(name="median", f=1, pre=(step,)))


def test_a_crowd_of_large_colluders_does_not_steer_the_crowd_reference() -> None:
    # Seven honest rows sharing a direction (plus their own parts) and three colluders at
    # -5 times it: the plain sum points the colluders' way, so the honest rows look like the
    # outliers; counted once and as unit vectors, the colluders are the ones pushing back.
    honest = torch.eye(10, dtype=torch.float64)[:7] * 2.0 + torch.ones(10, dtype=torch.float64)
    colluders = -5 * honest.mean(dim=0).expand(3, 10)
    x = torch.cat([honest, colluders])
    gram = x @ x.T
    assert float(sum_alignment(gram)[:7].max()) < 0 < float(sum_alignment(gram)[7:].min())
    crowd = crowd_alignment(gram, 0.9)
    assert float(crowd[7:].max()) < 0 < float(crowd[:7].min())


def test_crowd_alignment_ignores_norms_and_follows_the_rows_order() -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(9, 5, dtype=torch.float64, generator=generator)
    scales = torch.rand(9, 1, dtype=torch.float64, generator=generator) * 100 + 0.01
    order = torch.randperm(9, generator=generator)
    base = crowd_alignment(x @ x.T, 0.9)
    scaled = x * scales
    assert torch.allclose(crowd_alignment(scaled @ scaled.T, 0.9), base)
    shuffled = x[order]
    assert torch.allclose(crowd_alignment(shuffled @ shuffled.T, 0.9), base[order])


def test_crowd_alignment_of_zero_and_lone_rows_is_zero() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert crowd_alignment(x @ x.T, 0.9)[1] == 0.0
    assert crowd_alignment(x[:1] @ x[:1].T, 0.9).tolist() == [0.0]


def flag_round(
    state: dict[str, torch.Tensor],
    rows: list[list[float]] = FLAG_ROWS,
    step: StepConfig = PERSISTENT,
) -> Aggregate:
    context = RoundContext(state=state, clients=CLIENTS)
    return run("median", rows, pre=(step,), f=1, context=context)


def test_a_client_is_flagged_only_once_its_shortfall_persists() -> None:
    first = flag_round({})
    assert first.flagged == ()  # S = 1 - 0.05 = 0.95, not past 1
    assert first.state[CLIENTS_KEY].tolist() == [14]
    assert first.state[SCORES_KEY].tolist() == pytest.approx([0.95])

    second = flag_round(dict(first.state))

    assert second.flagged == (4,)  # S = 1.9
    assert second.state[SCORES_KEY].tolist() == pytest.approx([1.9])


def test_a_client_that_falls_short_once_recovers_and_leaves_the_table() -> None:
    first = flag_round({})
    aligned = [[1.0, 0.0]] * 5  # everyone agrees: every shortfall is 0
    second = flag_round(dict(first.state), aligned)
    assert second.flagged == ()
    assert second.state[SCORES_KEY].tolist() == pytest.approx([0.9])  # 0.95 - 0.05
    state = dict(second.state)
    for _ in range(18):
        state = dict(flag_round(state, aligned).state)
    assert state[CLIENTS_KEY].tolist() == [] and state[SCORES_KEY].tolist() == []


def test_a_ceiling_keeps_s_at_most_that_high_so_a_probe_is_judged_on_its_own_shortfall() -> None:
    params = {"drift": 0.05, "threshold": 1.0, "ceiling": 1.0}
    step = StepConfig(name="persistent_flags", params=params)
    state: dict[str, torch.Tensor] = {}
    # S before the cap 0.95, 1.9, 1.95 (1.0 + 0.95); kept 0.95, 1.0, 1.0.
    for flagged, kept in (((), 0.95), ((4,), 1.0), ((4,), 1.0)):
        result = flag_round(state, FLAG_ROWS, step)
        assert result.flagged == flagged
        assert result.state[SCORES_KEY].tolist() == pytest.approx([kept])
        state = dict(result.state)
    # Back from a cool-down, a probe that points away (alignment below max_cosine) but falls
    # short of the population by less than the drift is not flagged: five unit rows 72 degrees
    # apart all have the median cosine -0.81, so every shortfall is 0. Uncapped, S would be
    # 2.8 and flag it whatever it sent. One that falls short by more again is flagged.
    pentagon = [[math.cos(a), math.sin(a)] for a in (2 * math.pi * i / 5 for i in range(5))]
    for rows, expected in ((pentagon, ()), (FLAG_ROWS, (4,))):
        assert flag_round(state, rows, step).flagged == expected
    stale = {CLIENTS_KEY: torch.tensor([14]), SCORES_KEY: torch.tensor([2.85], dtype=torch.float64)}
    assert flag_round(stale, pentagon).flagged == (4,)  # PERSISTENT: the same, uncapped


def test_spread_is_the_scaled_median_absolute_deviation_with_a_floor() -> None:
    # Median 0.3, absolute deviations (0.2, 0.1, 0, 0.1, 0.2): their median 0.1.
    alignment = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    assert spread(alignment, 0.01) == pytest.approx(0.14826)
    assert spread(alignment, 0.5) == 0.5
    assert spread(torch.zeros(4, dtype=torch.float64), 0.05) == 0.05


def relative_round(
    state: dict[str, torch.Tensor], rows: list[list[float]], min_spread: float = 0.5
) -> Aggregate:
    params = {"relative": True, "min_spread": min_spread, "drift": 1.0, "threshold": 1.5}
    return flag_round(state, rows, StepConfig(name="persistent_flags", params=params))


def test_relative_flags_count_the_shortfall_in_spreads_of_the_population() -> None:
    # FLAG_ROWS: alignments (0, 0, 0, 0, -1), no deviation: the floor 0.5 is the spread and
    # row 4 falls short by 1 / 0.5 = 2 spreads a round: S = 1, then 2, flagged past 1.5.
    first = relative_round({}, FLAG_ROWS)
    assert first.flagged == () and first.state[SCORES_KEY].tolist() == pytest.approx([1.0])
    assert relative_round(dict(first.state), FLAG_ROWS).flagged == (4,)


def test_relative_flags_spare_a_shortfall_within_a_heterogeneous_populations_spread() -> None:
    # Unit rows at 0, 30, 60, 120 and 150 degrees: alignments (-0.5, 0, 0.5, 0, -0.5),
    # median 0, spread 1.4826 x 0.5 = 0.74. Rows 0 and 4 fall 0.5 short every round: counted
    # in cosine (drift 0.05) that passes 1 in the third round; counted in spreads it is 0.67
    # a round, under the drift of 1, and S stays 0.
    angles = [math.radians(a) for a in (0, 30, 60, 120, 150)]
    rows = [[math.cos(a), math.sin(a)] for a in angles]
    absolute: dict[str, torch.Tensor] = {}
    relative: dict[str, torch.Tensor] = {}
    for _ in range(3):
        absolute = dict(flag_round(absolute, rows).state)
        result = relative_round(relative, rows, min_spread=0.1)
        assert result.flagged == ()
        relative = dict(result.state)
    assert flag_round(absolute, rows).flagged != ()
    assert relative[CLIENTS_KEY].tolist() == []


def test_persistent_flags_flag_at_most_f_rows_the_largest_scores_first() -> None:
    state = {
        CLIENTS_KEY: torch.tensor([13, 14]),
        SCORES_KEY: torch.tensor([3.0, 5.0], dtype=torch.float64),
    }
    rows = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.1], [-1.0, 0.0]]
    result = flag_round(state, rows)
    assert result.flagged == (4,)  # f = 1: client 14 (S 5.95) before client 13


def test_without_client_ids_each_round_is_judged_alone() -> None:
    result = run("median", FLAG_ROWS, pre=(PERSISTENT,), f=1)
    assert result.flagged == () and CLIENTS_KEY not in result.state


def test_step_state_is_carried_beside_the_rules_own() -> None:
    context = RoundContext(clients=CLIENTS)
    result = run("centered_clipping", FLAG_ROWS, pre=(PERSISTENT,), f=1, context=context)
    assert {CLIENTS_KEY, SCORES_KEY, "centered_clipping.centre"} <= set(result.state)


# --- the round's f --------------------------------------------------------------------------


def test_effective_f_subtracts_rejected_updates_down_to_zero() -> None:
    assert effective_f(4, rejected=1) == 3
    assert effective_f(2, rejected=5) == 0
    with pytest.raises(AggregationError, match="f=-1"):
        effective_f(-1, rejected=0)


def test_a_contexts_f_replaces_the_configured_one() -> None:
    rows = [[0.0], [1.0], [2.0], [3.0], [100.0]]
    trimmed = run("trimmed_mean", rows, f=2)
    assert torch.allclose(trimmed.vector, torch.tensor([2.0]))  # keeps 2 only
    relaxed = run("trimmed_mean", rows, f=2, context=RoundContext(f=1))
    assert torch.allclose(relaxed.vector, torch.tensor([2.0]))  # (1 + 2 + 3) / 3
    none = run("trimmed_mean", rows, f=2, context=RoundContext(f=0))
    assert torch.allclose(none.vector, torch.tensor([21.2]))
    with pytest.raises(AggregationError, match=r"median needs n >= 2f \+ 1; got n=5, f=3"):
        run("median", rows, f=1, context=RoundContext(f=3))


def test_client_ids_must_match_the_rows() -> None:
    with pytest.raises(AggregationError, match="2 client ids for 5 updates"):
        run("median", FLAG_ROWS, f=1, context=RoundContext(clients=(1, 2)))


def test_min_rows_is_the_strictest_parts_bound() -> None:
    bulyan = build_aggregator(AggregationConfig(name="bulyan", f=2, pre=(StepConfig(name="nnm"),)))
    assert isinstance(bulyan, Pipeline)
    assert bulyan.min_rows(2) == 11 and bulyan.min_rows(0) == 3
    mean = build_aggregator(AggregationConfig(name="fedavg", pre=(StepConfig(name="bucketing"),)))
    assert isinstance(mean, Pipeline) and mean.min_rows(3) == 1


# --- FoolsGold ------------------------------------------------------------------------------


def test_count_sketch_keeps_small_models_exactly_and_is_linear_and_seeded() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(count_sketch(x, 16, seed=0), x.double())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 100, generator=g).unbind()
    sketch = count_sketch(torch.stack([a, b, a + b]), 16, seed=3)
    assert torch.allclose(sketch[2], sketch[0] + sketch[1])
    assert torch.equal(sketch, count_sketch(torch.stack([a, b, a + b]), 16, seed=3))
    one = torch.zeros(1, 100)
    one[0, 37] = -2.5  # one coordinate lands in one bucket, with a sign: its norm is kept
    assert float(count_sketch(one, 16, seed=3).norm()) == pytest.approx(2.5)


def test_foolsgold_zeroes_identical_histories_and_keeps_distinct_ones() -> None:
    history = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    assert foolsgold_weights(history).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_foolsgold_pardons_and_takes_the_logit() -> None:
    # cos(h0, h1) = 0.6, cos(h0, h2) = 0.2, cos(h1, h2) = 0.12: maxima 0.6, 0.6, 0.2. Row 2
    # is pardoned by 0.2 / 0.6: its largest similarity becomes 0.2 / 3. Weights 1 - max:
    # 0.4, 0.4, 0.9333; over the largest: 0.42857 (0.99 for the largest); logit + 0.5:
    # ln(0.75) + 0.5 = 0.21232, and 1 (clipped).
    history = torch.tensor(
        [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.2, 0.0, 0.96**0.5]], dtype=torch.float64
    )
    weights = foolsgold_weights(history)
    assert weights.tolist() == pytest.approx([0.21232, 0.21232, 1.0], abs=1e-5)


def foolsgold(centre: bool = False) -> StepConfig:
    return StepConfig(name="foolsgold", params={"centre": centre})


def test_foolsgold_weighs_the_rule_and_discards_zero_weights() -> None:
    rows = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    result = run("fedavg", rows, pre=(foolsgold(),))
    assert torch.allclose(result.vector, torch.tensor([0.0, 0.5, 0.5]))
    assert result.discarded == (0, 1)


def test_foolsgold_sums_each_clients_updates_over_rounds() -> None:
    first_rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    first = run("fedavg", first_rows, pre=(foolsgold(),), context=RoundContext(clients=(4, 7, 9)))
    assert first.state[FG_CLIENTS].tolist() == [4, 7, 9]

    # Round two: clients 7 and 9 (and a newcomer, 2) send the same update; 4 is absent.
    second_rows = [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    context = RoundContext(state=dict(first.state), clients=(2, 7, 9))
    second = run("fedavg", second_rows, pre=(foolsgold(),), context=context)

    assert second.state[FG_CLIENTS].tolist() == [2, 4, 7, 9]
    assert second.state[FG_HISTORY].tolist() == [
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 1.0],
        [0.0, 0.0, 2.0],
    ]
    # Histories 2 and 9 point the same way (cosine 1): both weigh 0; 7 alone carries it.
    assert second.discarded == (0, 2)


def test_foolsgold_centres_each_round_before_summing() -> None:
    rows = [[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    result = run(
        "fedavg", rows, pre=(foolsgold(centre=True),), context=RoundContext(clients=(0, 1, 2))
    )
    # Centred: (1, -1), (-1, 1), (0, 0): rows 0 and 1 opposite (cosine -1), row 2 zero.
    assert result.state[FG_HISTORY].tolist() == [[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]]


# --- DnC's spectral filter ------------------------------------------------------------------


def dnc(filter_: float = 1.0) -> StepConfig:
    return StepConfig(name="dnc", params={"filter": filter_})


# Four honest rows spread in their own directions, two colluders pushing one way together.
DNC_ROWS = [
    [1.0, 0.0, 0.0, 0.3],
    [0.0, 1.0, 0.0, 0.3],
    [-1.0, 0.0, 0.0, 0.3],
    [0.0, -1.0, 0.0, 0.3],
    [0.0, 0.0, 3.0, 0.3],
    [0.1, 0.0, 3.0, 0.3],
]


def test_spectral_scores_are_squared_projections_on_the_top_principal_axis() -> None:
    x = torch.tensor(DNC_ROWS, dtype=torch.float64)
    centred = x - x.mean(dim=0)
    axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    assert torch.allclose(spectral_scores(x @ x.T), (centred @ axis).square(), atol=1e-9)


def test_dnc_drops_the_colluders_furthest_out_along_the_main_axis() -> None:
    result = run("fedavg", DNC_ROWS, pre=(dnc(),), f=2)
    assert result.discarded == (4, 5) and result.flagged == ()
    assert torch.allclose(result.vector, torch.tensor([0.0, 0.0, 0.0, 0.3]), atol=1e-6)


def test_dnc_drops_filter_times_f_but_leaves_the_rule_the_rows_it_needs() -> None:
    step = Dnc(DncParams(filter=1.5))
    step.follow([(2, 1)])  # centred clipping behind it: 2f + 1 rows
    assert step.drop_count(20, 4) == 6
    assert step.drop_count(12, 4) == 3  # 12 - 9
    assert step.drop_count(9, 4) == 0
    assert Dnc(DncParams()).drop_count(5, 0) == 0
    # In a pipeline: median with f = 2 needs 5 of the 6 rows, so one goes.
    result = run("median", DNC_ROWS, pre=(dnc(),), f=2)
    assert len(result.discarded) == 1


def test_dnc_clamp_keeps_every_row_and_pulls_the_suspects_into_the_others_range() -> None:
    clamp = StepConfig(name="dnc", params={"clamp": True, "trim": 0})
    result = run("fedavg", DNC_ROWS, pre=(clamp,), f=2)
    # Rows 4 and 5 are the suspects: their third coordinate (3) is clamped to the others'
    # range [0, 0]; row 5's 0.1 lies within [-1, 1] and stays.
    assert result.discarded == ()
    assert torch.allclose(result.vector, torch.tensor([0.1 / 6, 0.0, 0.0, 0.3]), atol=1e-6)
    # With trim = 1 the others' range loses one extreme at each end: [-1, 1] -> [0, 0] on
    # the first two coordinates, so row 5's 0.1 is clamped too.
    trimmed = StepConfig(name="dnc", params={"clamp": True, "trim": 1})
    result = run("fedavg", DNC_ROWS, pre=(trimmed,), f=2)
    assert torch.allclose(result.vector, torch.tensor([0.0, 0.0, 0.0, 0.3]), atol=1e-6)
