"""The public colluding-attack API (``RoundView``) and the attacks that adapt to the honest
updates or to the server's rule: min-max, min-sum, mimic, optimised ALIE and IPM. Exact
vectors on tiny inputs worked out by hand; the optimised attacks against real rules."""

from __future__ import annotations

import math

import pytest
import torch

from phalanx.aggregation import RoundContext, build_aggregator
from phalanx.config import AggregationConfig, ValidationConfig
from phalanx.engine.norms import NormReference
from phalanx.errors import ConfigError
from phalanx.faults.adaptive import (
    Mimic,
    MinMax,
    MinSum,
    mimic_choice,
    min_max_gamma,
    min_sum_gamma,
    perturbation,
)
from phalanx.faults.attacks import AggregationView, Alie, ColludingAttack, Ipm, RoundView
from phalanx.faults.byzantine import ATTACKS
from phalanx.faults.optimised import (
    MARGIN,
    AlieOptimal,
    IpmOptimal,
    damage,
    norm_ceiling,
    norm_passes,
)
from phalanx.faults.view import aggregation_view

# Mean (1, 1); sample std (1, sqrt 3); squared pairwise distances 4, 10, 10.
TRIANGLE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
R3 = math.sqrt(3)


def view_of(honest: torch.Tensor, f: int, aggregation: AggregationView | None = None) -> RoundView:
    k = honest.shape[0]
    return RoundView(
        honest, tuple(range(k)), tuple(range(k, k + f)), k + f,
        aggregation=aggregation or AggregationView(),
    )  # fmt: skip


# --- the view -------------------------------------------------------------------------------


def test_round_view_stacks_the_crafted_copies_in_client_id_order() -> None:
    honest = torch.tensor([[1.0], [2.0]])
    view = RoundView(honest, (0, 2), (1, 3), 4)
    assert view.f == 2
    assert view.stack_with(torch.tensor([9.0])).flatten().tolist() == [1.0, 9.0, 2.0, 9.0]


def test_round_view_refuses_rows_that_do_not_match_the_client_ids() -> None:
    with pytest.raises(ConfigError, match=r"honest is \(2, 1\), expected one row per honest"):
        RoundView(torch.zeros(2, 1), (0,), (1,), 3)


def test_collude_is_craft_round_on_a_view_with_stand_in_ids() -> None:
    seen: list[RoundView] = []

    class Probe(ColludingAttack):
        def craft_round(self, view: RoundView) -> torch.Tensor:
            seen.append(view)
            return view.honest[0]

    Probe().collude(TRIANGLE, n=5, f=2)
    assert seen[0].honest_clients == (0, 1, 2) and seen[0].byzantine_clients == (3, 4)
    assert seen[0].n == 5 and seen[0].global_model is None


def test_every_new_attack_is_registered_by_name() -> None:
    for name, cls in [("min_max", MinMax), ("min_sum", MinSum), ("mimic", Mimic),
                      ("alie_optimal", AlieOptimal), ("ipm_optimal", IpmOptimal)]:  # fmt: skip
        assert ATTACKS.lookup(name) is cls
        assert ATTACKS.parse(name, {}) == cls()


# --- min-max and min-sum --------------------------------------------------------------------


def test_perturbation_directions() -> None:
    assert torch.allclose(
        perturbation(TRIANGLE, "unit_vec"), -torch.ones(2, dtype=torch.float64) / math.sqrt(2)
    )
    assert torch.equal(perturbation(TRIANGLE, "sign"), -torch.ones(2, dtype=torch.float64))
    assert torch.allclose(
        perturbation(TRIANGLE, "std"), torch.tensor([-1.0, -R3], dtype=torch.float64)
    )


def test_min_max_takes_the_largest_gamma_within_the_honest_diameter() -> None:
    # p = -(1, sqrt 3), |p|^2 = 4; row 2 (D = (0, 2), D.p = -2 sqrt 3) binds first:
    # 4 - 4 sqrt3 g... the larger root of 4 g^2 + 4 sqrt3 g + 4 - 10 = 0 is (3 - sqrt 3)/2.
    gamma = (3 - R3) / 2
    assert min_max_gamma(TRIANGLE, perturbation(TRIANGLE, "std")) == pytest.approx(gamma)
    crafted = MinMax(direction="std").craft_round(view_of(TRIANGLE, 2))
    expected = torch.tensor([(R3 - 1) / 2, (5 - 3 * R3) / 2], dtype=torch.float64)
    assert torch.allclose(crafted, expected)
    largest = (TRIANGLE - crafted).square().sum(dim=1).max()
    assert float(largest) == pytest.approx(10.0)  # on the bound, not past it


def test_min_sum_takes_the_largest_gamma_within_the_largest_honest_sum() -> None:
    # sum_i |D_i|^2 = 8, the largest honest sum of squared distances is row 2's 20:
    # gamma = sqrt((20 - 8) / (3 x 4)) = 1, crafted = (1, 1) - (1, sqrt 3).
    assert min_sum_gamma(TRIANGLE, perturbation(TRIANGLE, "std")) == pytest.approx(1.0)
    crafted = MinSum().craft_round(view_of(TRIANGLE, 1))
    assert torch.allclose(crafted, torch.tensor([0.0, 1 - R3], dtype=torch.float64))


def test_min_max_with_the_unit_mean_direction_and_identical_rows() -> None:
    assert torch.allclose(
        MinMax(direction="unit_vec").craft_round(view_of(TRIANGLE, 1)),
        torch.zeros(2, dtype=torch.float64),
    )  # gamma = sqrt 2: the crafted update sits at distance sqrt 10 from (1, 3)
    same = torch.ones(3, 2)
    assert torch.equal(MinMax().craft_round(view_of(same, 1)), torch.ones(2))


# --- mimic ----------------------------------------------------------------------------------


def test_mimic_copies_the_row_furthest_along_the_top_principal_direction() -> None:
    rows = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0]])  # centred: -5/3, -2/3, 7/3
    assert mimic_choice(rows) == 2
    view = RoundView(rows, (3, 5, 8), (1,), 4)
    assert torch.equal(Mimic().craft_round(view), rows[2])
    assert torch.equal(Mimic(client=5).craft_round(view), rows[1])
    assert torch.equal(Mimic(client=4).craft_round(view), rows[2])  # 4 not in the round


# --- optimised ALIE and IPM -----------------------------------------------------------------


def test_norm_checks_as_validation_takes_them() -> None:
    bounds = AggregationView(max_norm=8.0, max_relative_norm=3.0)
    view = view_of(torch.zeros(3, 1), 2, bounds)
    norms = torch.tensor([1.0, 2.0, 3.0])
    # With two copies of 5: norms 1 2 3 5 5, lower median 3, bound 9; 10 > 9, 8.5 > max_norm.
    assert norm_passes(5.0, norms, view)
    assert not norm_passes(8.5, norms, view) and not norm_passes(10.0, norms, view)
    assert norm_ceiling(norms, view, math.inf) == pytest.approx(8.0 / (1 + 2 * MARGIN))
    assert norm_ceiling(
        norms, view_of(torch.zeros(3, 1), 2, AggregationView(max_relative_norm=3.0)), math.inf
    ) == pytest.approx(9.0 / (1 + 2 * MARGIN))


def test_optimal_ipm_against_the_mean_goes_to_the_relative_norm_bound() -> None:
    honest = torch.tensor([[3.0, 4.0], [6.0, 8.0], [0.0, 5.0]])  # norms 5, 10, 5
    view = view_of(honest, 1, AggregationView(max_relative_norm=3.0))  # no rule: the mean
    crafted = IpmOptimal().craft_round(view)
    mean = honest.mean(dim=0)
    epsilon = 15.0 / (1 + 2 * MARGIN) / float(mean.norm())  # 3 x lower median 5
    assert torch.allclose(crafted, -epsilon * mean, rtol=1e-5)
    stack_norms = [*honest.norm(dim=1).tolist(), float(crafted.norm())]
    assert NormReference(ValidationConfig(), stack_norms).violation(float(crafted.norm())) is None


def test_optimal_alie_without_bounds_takes_the_largest_z() -> None:
    crafted = AlieOptimal(max_z=4.0).craft_round(view_of(TRIANGLE.float(), 2))
    assert torch.allclose(crafted, torch.tensor([1 - 4.0, 1 - 4 * R3]))


def synthetic(seed: int, k: int = 14, d: int = 60) -> torch.Tensor:
    """Heterogeneous honest updates: a shared direction plus per-client noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g) * 0.4 + torch.randn(k, d, generator=g)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "multi_krum", "centered_clipping"])
@pytest.mark.parametrize(("optimal", "fixed"), [(AlieOptimal(), Alie()), (IpmOptimal(), Ipm())])
def test_optimised_attacks_do_at_least_the_fixed_ones_damage_within_the_norm_bound(
    rule: str, optimal: ColludingAttack, fixed: ColludingAttack
) -> None:
    f, validation = 4, ValidationConfig()
    for seed in range(3):
        honest = synthetic(seed)
        view = view_of(honest, f, aggregation_view(AggregationConfig(name=rule, f=f), validation))
        crafted, plain = optimal.craft_round(view), fixed.craft_round(view)
        assert damage(view, crafted) >= damage(view, plain) - 1e-6
        norms = view.stack_with(crafted).norm(dim=1).tolist()
        assert NormReference(validation, norms).violation(float(crafted.norm())) is None


def test_optimised_attacks_do_clearly_more_damage_to_trimmed_mean() -> None:
    honest, f = synthetic(0), 4
    view = view_of(
        honest, f, aggregation_view(AggregationConfig(name="trimmed_mean", f=f), ValidationConfig())
    )
    assert damage(view, AlieOptimal().craft_round(view)) > 1.5 * damage(
        view, Alie().craft_round(view)
    )
    assert damage(view, IpmOptimal().craft_round(view)) > 1.5 * damage(
        view, Ipm().craft_round(view)
    )


def test_aggregation_view_runs_the_configured_pipeline() -> None:
    config = AggregationConfig(name="trimmed_mean", f=1)
    view = aggregation_view(config, ValidationConfig(max_norm=50.0, max_relative_norm=2.0))
    stack = synthetic(1, k=5, d=4)
    expected = build_aggregator(config).aggregate(stack, torch.ones(5), RoundContext()).vector
    assert view.aggregate is not None and torch.equal(view.aggregate(stack), expected)
    assert (view.rule, view.f, view.max_norm, view.max_relative_norm) == (
        "trimmed_mean",
        1,
        50.0,
        2.0,
    )
    # Too few rows for f: the rule refuses, the view falls back to the mean.
    assert torch.allclose(view.aggregate(stack[:2]), stack[:2].mean(dim=0))
