"""The accuracy-under-attack benchmark's grid is data: check what each cell runs."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.byzantine.grid import AGGREGATORS, CLEAN, DEFAULT, Cell, cell_config
from phalanx.config import load_config
from phalanx.scenarios import scenario_path


def cell(aggregator: str, fraction: float = 0.2, attack: str = "alie", **kw: str) -> Cell:
    return Cell(kw.get("dataset", "digits"), kw.get("partition", "iid"), fraction, attack,
                aggregator, 7)  # fmt: skip


def test_the_default_is_the_robust_scenarios_own_aggregation_and_validation() -> None:
    scenario = load_config(scenario_path("robust"))
    config, f, capped = cell_config(cell(DEFAULT), [])
    assert config.aggregation == scenario.aggregation
    assert config.validation == scenario.validation
    assert (f, capped) == (scenario.aggregation.f, False)


def test_single_rules_get_f_byzantine_clients_and_no_relative_norm_filter() -> None:
    config, f, capped = cell_config(cell("trimmed_mean", 0.3, partition="dirichlet0.5"), [])
    assert (config.aggregation.name, config.aggregation.f, f, capped) == (
        "trimmed_mean",
        6,
        6,
        False,
    )
    assert config.validation.max_relative_norm is None
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
        cell("median", dataset="fashion_mnist"), ["workload.train_examples=300", "rounds=5"]
    )
    assert config.workload.name == "fashion_mnist"
    assert config.workload.train_examples == 300 and config.rounds == 5  # type: ignore[union-attr]


def test_every_aggregator_in_the_grid_builds() -> None:
    from phalanx.aggregation import build_aggregator

    for name in AGGREGATORS:
        config, _, _ = cell_config(cell(name), [])
        build_aggregator(config.aggregation)


def test_the_report_gives_the_defaults_honest_flags_and_worst_rounds_lost() -> None:
    from benchmarks.byzantine.report import _honest_flags

    def item(aggregator: str, fraction: float, flagged: int, share: float) -> dict[str, Any]:
        outcome = {"honest_flagged": flagged, "honest_rounds_lost_share": share}
        return {"cell": {"aggregator": aggregator, "partition": "iid", "fraction": fraction},
                "outcome": outcome}  # fmt: skip

    cells = {
        "a": item(DEFAULT, 0.3, 10, 0.01),
        "b": item(DEFAULT, 0.3, 20, 0.04),
        "c": item("median", 0.3, 99, 0.5),  # not the default: left out
        "d": {"cell": {"aggregator": DEFAULT, "partition": "iid", "fraction": 0.0},
              "outcome": {}},  # a cell measured before the flags were: left out
    }  # fmt: skip
    lines = _honest_flags(cells, ["iid"], [0.0, 0.3])
    assert lines[-2] == "| iid | 30% | 15.0 | 4.0% |"
    assert not any("| 0% |" in line for line in lines)
    assert _honest_flags({"d": cells["d"]}, ["iid"], [0.0]) == []


def test_every_tuning_candidate_builds_a_valid_config_on_every_scenario() -> None:
    from benchmarks.byzantine.tuning import CANDIDATES, CHECKS, SCENARIOS, SHIPPED, TUNING_SEEDS

    for overrides in CANDIDATES.values():
        for partition, fraction, attack in [*SCENARIOS, *CHECKS]:
            cell = Cell("digits", partition, fraction, attack, DEFAULT, TUNING_SEEDS[0])
            config, f, _ = cell_config(cell, overrides)
            assert f == 4 and config.seed == TUNING_SEEDS[0]
    config, _, _ = cell_config(cell, CANDIDATES[SHIPPED])
    shipped = load_config(scenario_path("robust"))
    assert config.aggregation == shipped.aggregation and config.health == shipped.health
    previous, _, _ = cell_config(cell, CANDIDATES["momentum_flags"])
    assert previous.aggregation.params == {"flag_alignment": 0.0}
    assert previous.aggregation.pre == () and previous.aggregation.health_feedback
