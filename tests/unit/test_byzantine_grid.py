"""The accuracy-under-attack benchmark's grid is data: check what each cell runs."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.byzantine.grid import AGGREGATORS, CLEAN, DEFAULT, Cell, cell_config
from phalanx.aggregation.registry import max_f
from phalanx.config import load_config
from phalanx.errors import ConfigError
from phalanx.scenarios import scenario_path


def cell(aggregator: str, fraction: float = 0.2, attack: str = "alie", **kw: Any) -> Cell:
    """A cell with f sized for the attackers present (f right) unless ``f_for`` says."""
    return Cell(kw.get("dataset", "digits"), kw.get("partition", "iid"), fraction, attack,
                aggregator, 7, kw.get("f_for", fraction or None),
                kw.get("validation", "scenario"))  # fmt: skip


def test_the_default_is_the_robust_scenarios_own_aggregation_and_validation() -> None:
    scenario = load_config(scenario_path("robust"))
    config, f, capped = cell_config(cell(DEFAULT, f_for=None), [])
    assert config.aggregation == scenario.aggregation
    assert config.validation == scenario.validation
    assert (f, capped) == (scenario.aggregation.f, False)


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize(("f_for", "expected"), [(0.3, 6), (0.2, 4), (0.1, 2), (None, 4)])
def test_every_row_the_defaults_included_gets_f_the_same_way(
    aggregator: str, f_for: float | None, expected: int
) -> None:
    config, f, capped = cell_config(cell(aggregator, 0.3, f_for=f_for), [])
    tolerated = max_f(config.aggregation.name, 20)
    assert (f, capped) == ((expected, False) if tolerated is None or expected <= tolerated
                           else (tolerated, True))  # fmt: skip
    assert config.aggregation.f == f and config.faults.byzantine.fraction == 0.3


@pytest.mark.parametrize(("mode", "bound"), [("scenario", 3.0), ("no_relative_norm", None)])
def test_every_row_is_behind_the_same_validation(mode: str, bound: float | None) -> None:
    scenario = load_config(scenario_path("robust")).validation
    for name in AGGREGATORS:
        config, _, _ = cell_config(cell(name, validation=mode), [])
        assert config.validation == scenario.model_copy(update={"max_relative_norm": bound})


def test_an_unknown_validation_mode_or_partition_is_refused() -> None:
    with pytest.raises(ConfigError, match="validation mode 'loose'"):
        cell_config(cell("median", validation="loose"), [])
    with pytest.raises(ConfigError, match="partition 'dirichlet': expected iid or dirichlet"):
        cell_config(cell("median", partition="dirichlet"), [])


def test_single_rules_keep_the_partition_fraction_and_seed() -> None:
    config, f, capped = cell_config(cell("trimmed_mean", 0.3, partition="dirichlet0.5"), [])
    assert (config.aggregation.name, f, capped) == ("trimmed_mean", 6, False)
    assert config.workload.dirichlet_alpha == 0.5
    assert config.faults.byzantine.fraction == 0.3 and config.seed == 7


@pytest.mark.parametrize(("rule", "f", "capped"), [("bulyan", 4, True), ("krum", 6, False),
                                                   ("fedavg", 6, False)])  # fmt: skip
def test_f_is_capped_at_what_the_rule_tolerates(rule: str, f: int, capped: bool) -> None:
    _, used, was_capped = cell_config(cell(rule, 0.3), [])
    assert (used, was_capped) == (f, capped)


def test_clean_cells_have_no_byzantine_clients_and_the_design_f() -> None:
    config, f, _ = cell_config(cell("median", 0.0, CLEAN), [])
    assert config.faults.byzantine.fraction == 0.0 and f == 4


def test_overrides_may_set_the_chosen_datasets_own_keys() -> None:
    config, _, _ = cell_config(
        cell("median", dataset="fashion_mnist"), ["workload.train_examples=300", "rounds=20"]
    )
    assert config.workload.name == "fashion_mnist"
    assert config.workload.train_examples == 300 and config.rounds == 20  # type: ignore[union-attr]


def test_every_aggregator_in_the_grid_builds() -> None:
    from phalanx.aggregation import build_aggregator

    for name in AGGREGATORS:
        config, _, _ = cell_config(cell(name), [])
        build_aggregator(config.aggregation)


def test_every_tuning_candidate_builds_a_valid_config_on_every_scenario() -> None:
    from benchmarks.byzantine.tuning import (
        CANDIDATES,
        CHECKS,
        HETEROGENEITY,
        SCENARIOS,
        SHIPPED,
        TUNING_SEEDS,
    )

    for overrides in CANDIDATES.values():
        for partition, fraction, attack in [*SCENARIOS, *CHECKS, *HETEROGENEITY]:
            cell = Cell("digits", partition, fraction, attack, DEFAULT, TUNING_SEEDS[0])
            config, f, _ = cell_config(cell, overrides)
            assert f == 4 and config.seed == TUNING_SEEDS[0]
    config, _, _ = cell_config(cell, CANDIDATES[SHIPPED])
    shipped = load_config(scenario_path("robust"))
    assert config.aggregation == shipped.aggregation and config.health == shipped.health
    previous, _, _ = cell_config(cell, CANDIDATES["momentum_flags"])
    assert previous.aggregation.params == {"flag_alignment": 0.0}
    assert previous.aggregation.pre == () and previous.aggregation.health_feedback
    # The baseline: plain FedAvg behind the same validation, nothing in front, no feedback.
    fedavg, _, _ = cell_config(cell, CANDIDATES["fedavg"])
    assert fedavg.aggregation.name == "fedavg" and fedavg.aggregation.pre == ()
    assert not fedavg.aggregation.health_feedback and fedavg.validation == shipped.validation


def test_the_tuning_summary_gives_means_backdoor_success_per_seed_and_the_worst_loss() -> None:
    from benchmarks.byzantine.tuning import key, summary

    clean, backdoor = ("iid", 0.0, CLEAN), ("dirichlet0.5", 0.2, "backdoor")

    def outcome(accuracy: float, asr: float | None, lost: float) -> dict[str, Any]:
        return {"accuracy": accuracy, "backdoor_asr": asr, "honest_rounds_lost_share": lost}

    runs = {
        key("a", clean, 1): {"outcome": outcome(0.90, None, 0.01)},
        key("a", clean, 2): {"outcome": outcome(0.80, None, 0.0)},
        key("a", backdoor, 1): {"outcome": outcome(0.70, 0.25, 0.03)},
    }
    header, rule, row = summary(["a"], runs, [1, 2], [clean, backdoor])
    assert header.startswith("| candidate | iid 0% clean | D0.5 20% backdoor |")
    assert rule.count("|---") == 5
    # clean: mean of 90 and 80; the backdoor cell ran on seed 1 only; worst loss 3%
    assert row == "| a | 85.0 | 70.0 | 25.0 | 3.00% |"
