"""The held-out Byzantine report: its seeds are never the tuning seeds, its rows compare
like for like, and its acceptance checks read the right cells and decide on the numbers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from benchmarks.byzantine import acceptance
from benchmarks.byzantine.cells import (
    F_RIGHT,
    F_UNDER,
    PARTITIONS,
    Plan,
    acceptance_grid,
    full_grid,
    group,
)
from benchmarks.byzantine.grid import AGGREGATORS, ATTACKS, CLEAN, DEFAULT, Cell, cell_config
from benchmarks.byzantine.seeds import GIVEN, GIVEN_TUNING, draw_seeds, given_seeds
from benchmarks.byzantine.tuning import TUNING_SEEDS
from benchmarks.byzantine_accuracy import main
from phalanx.errors import ConfigError


def scripted(values: list[int]) -> Callable[[int], int]:
    draws: Iterator[int] = iter(values)
    return lambda bound: next(draws) % bound


def test_a_drawn_tuning_seed_is_redrawn() -> None:
    seeds = draw_seeds(2, below=scripted([*TUNING_SEEDS, 11, *TUNING_SEEDS, 11, 13]))
    assert seeds == (11, 13)


@given(st.lists(st.sampled_from([*TUNING_SEEDS, 1, 2, 3]), min_size=40, max_size=40))
def test_drawn_seeds_are_never_tuning_seeds_and_distinct(draws: list[int]) -> None:
    try:
        seeds = draw_seeds(2, below=scripted(draws))
    except StopIteration:  # the script ran out before two held-out seeds came up
        return
    assert not set(seeds) & set(TUNING_SEEDS) and len(set(seeds)) == 2


def test_seeds_from_the_system_are_held_out_in_range_and_distinct() -> None:
    seeds = draw_seeds(200)
    assert not set(seeds) & set(TUNING_SEEDS) and len(set(seeds)) == 200
    assert all(0 <= s < 2**31 for s in seeds)


def test_a_source_that_only_gives_tuning_seeds_ends_with_an_error() -> None:
    with pytest.raises(ConfigError, match="without finding 1 held-out"):
        draw_seeds(1, below=lambda bound: TUNING_SEEDS[0])


def test_given_tuning_seeds_are_refused_unless_allowed_and_then_labelled() -> None:
    with pytest.raises(ConfigError, match=r"--seeds 42: the default was tuned on.*--allow-tun"):
        given_seeds([99, 42], allow_tuning=False)
    allowed = given_seeds([99, 42], allow_tuning=True)
    assert (allowed.source, allowed.held_out) == (GIVEN_TUNING, False)
    assert "not held out" in GIVEN_TUNING
    assert given_seeds([99, 11], allow_tuning=False).source == GIVEN
    with pytest.raises(ConfigError, match="given twice"):
        given_seeds([99, 99], allow_tuning=False)


def test_the_command_refuses_a_tuning_seed_before_running_anything(tmp_path: Path) -> None:
    assert main(["--seeds", str(TUNING_SEEDS[1]), "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_the_command_will_not_resume_on_a_file_without_seeds(tmp_path: Path) -> None:
    (tmp_path / "byzantine_digits.json").write_text(json.dumps({"cells": {}}))
    assert main(["--out", str(tmp_path)]) == 2


def test_more_seeds_keeps_the_stored_ones_and_draws_held_out_new_ones() -> None:
    from benchmarks.byzantine.seeds import DRAWN, Seeds
    from benchmarks.byzantine_accuracy import more_seeds

    drawn = Seeds((11, 12), DRAWN)
    assert more_seeds(drawn, 0) is drawn
    more = more_seeds(drawn, 3)
    assert more.seeds[:2] == (11, 12) and len(set(more.seeds)) == 5 and more.held_out
    assert more.source == DRAWN
    assert more_seeds(Seeds((11,), GIVEN), 1).source == f"{GIVEN}, 1 more {DRAWN}"
    with pytest.raises(ConfigError, match="at least 0"):
        more_seeds(drawn, -1)


def test_more_seeds_without_a_stored_run_is_refused(tmp_path: Path) -> None:
    assert main(["--more-seeds", "2", "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def plan(**kw: Any) -> Plan:
    fields: dict[str, Any] = {"dataset": "digits", "partitions": PARTITIONS,
                              "fractions": [0.1, 0.2, 0.3], "aggregators": list(AGGREGATORS),
                              "attacks": list(ATTACKS), "seeds": (11, 12)}  # fmt: skip
    return Plan(**{**fields, **kw})


def test_the_full_grid_has_every_setting_and_fedavg_no_under_estimated_row() -> None:
    cells = full_grid(plan(seeds=(11,)))
    rows = {(c.fraction, c.f_for) for c in cells if c.aggregator == DEFAULT}
    assert rows == {(0.0, None), (0.1, 0.1), (0.2, 0.2), (0.3, 0.3), (0.3, 0.2)}
    assert {(c.fraction, c.f_for) for c in cells if c.aggregator == "fedavg"} == rows - {(0.3, 0.2)}
    assert {c.partition for c in cells} == set(PARTITIONS)
    assert len(cells) == len(PARTITIONS) * (10 * (1 + 3 * 14) + 9 * 14)


def test_every_row_of_a_setting_gets_its_f_the_same_way() -> None:
    cells = [c for c in full_grid(plan(partitions=["iid"], seeds=(11,))) if c.attack == "alie"]
    for c in cells:
        _, f, capped = cell_config(c, [])
        wanted = {0.1: 2, 0.2: 4, 0.3: 6}[c.f_for or 0.2]
        assert f == wanted or (capped and f < wanted), c


def test_the_acceptance_preset_runs_only_default_and_fedavg_and_feeds_every_check() -> None:
    cells = acceptance_grid(plan())
    assert {c.aggregator for c in cells} == {DEFAULT, "fedavg"}
    assert len(cells) == 2 * (10 + 4 * 14 + 14 + 2 * 14)
    assert all(c.partition == "dirichlet0.1" for c in cells if c.aggregator == "fedavg"
               and c.attack != CLEAN)  # fmt: skip
    found = acceptance.checks(group(synthetic(cells)))
    assert [c.status for c in found] == [acceptance.PASS] * len(found), found
    assert len(found) == 17


def outcome(cell: Cell) -> dict[str, Any]:
    """A plausible passing run: FedAvg 95 clean, the default 94.5 clean and 93 under
    attack (90 at Dirichlet 0.1, where FedAvg falls to 85), honest loss 0.5%."""
    if cell.attack == CLEAN:
        accuracy = 0.95 if cell.aggregator == "fedavg" else 0.945
    elif cell.aggregator == "fedavg":
        accuracy = 0.85
    else:
        accuracy = 0.90 if cell.partition == "dirichlet0.1" else 0.93
    return {"accuracy": accuracy, "capped": False, "honest_flagged": 3, "rounds_failed": 0,
            "honest_rounds_lost_share": 0.005,
            "backdoor_asr": 0.1 if cell.attack == "backdoor" else None}  # fmt: skip


def synthetic(
    cells: list[Cell], change: Callable[[Cell], dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    return [{"cell": asdict(c), "outcome": {**outcome(c), **(change(c) if change else {})}}
            for c in cells]  # fmt: skip


def status(change: Callable[[Cell], dict[str, Any]], name: str) -> tuple[str, str, set[str]]:
    """The one check whose name starts with ``name``, after ``change`` on the outcomes, and
    the names of every check that did not pass."""
    found = acceptance.checks(group(synthetic(acceptance_grid(plan()), change)))
    (check,) = [c for c in found if c.name.startswith(name)]
    return check.status, check.detail, {c.name for c in found if c.status != acceptance.PASS}


def test_a_drop_over_three_points_at_20_percent_fails_and_three_passes() -> None:
    def drop(points: float) -> Callable[[Cell], dict[str, Any]]:
        def change(c: Cell) -> dict[str, Any]:
            hit = (c.partition, c.attack, c.aggregator) == ("iid", "sign_flip", DEFAULT)
            return {"accuracy": 0.95 - points / 100} if hit else {}

        return change

    name = "20% Byzantine, f right, iid"
    assert status(drop(3.0), name)[0] == acceptance.PASS
    verdict, detail, failed = status(drop(3.5), name)
    assert verdict == acceptance.FAIL and "worst sign_flip 91.5: drop 3.5 points" in detail
    assert len(failed) == 1


def test_the_default_below_fedavg_under_an_attack_at_dirichlet_01_fails() -> None:
    def change(c: Cell) -> dict[str, Any]:
        return {"accuracy": 0.91} if (c.aggregator, c.attack) == ("fedavg", "mimic") else {}

    name = "20% Byzantine, f right, dirichlet0.1: the default never below FedAvg"
    verdict, detail, failed = status(change, name)
    assert (verdict, detail, len(failed)) == (acceptance.FAIL, "below under: mimic 90.0 < 91.0", 1)


def test_one_seed_at_chance_at_30_percent_fails() -> None:
    def change(c: Cell) -> dict[str, Any]:
        hit = (c.fraction, c.f_for, c.seed, c.attack) == (0.3, 0.2, 12, "ipm")
        return {"accuracy": 0.10} if hit else {}

    verdict, detail, failed = status(change, F_UNDER.label + ", dirichlet0.5: no seed")
    assert verdict == acceptance.FAIL and detail.startswith("lowest seed 10.0 (ipm;")
    # the mean falls too; the same setting with f right is untouched
    assert len(failed) == 2 and not any(name.startswith(F_RIGHT[0.3].label) for name in failed)


@pytest.mark.parametrize(
    ("change", "name", "detail"),
    [
        (lambda c: {"accuracy": 0.93} if (c.attack, c.aggregator, c.partition) ==
         (CLEAN, DEFAULT, "dirichlet1.0") else {}, "No attack, dirichlet1.0",
         "FedAvg 95.0, default 93.0: 2.0 points"),
        (lambda c: {"honest_rounds_lost_share": 0.02} if c.attack == "alie" and c.seed == 11
         else {}, "Honest client-rounds", "worst 2.00%"),
        (lambda c: {"backdoor_asr": 0.5} if c.attack == "backdoor" else {}, "Backdoor,",
         "mean 50.0%, worst seed 50.0%"),
    ],
)  # fmt: skip
def test_clean_cost_honest_loss_and_backdoor_checks_fail_on_their_numbers(
    change: Callable[[Cell], dict[str, Any]], name: str, detail: str
) -> None:
    verdict, text, failed = status(change, name)
    assert verdict == acceptance.FAIL and text.startswith(detail) and len(failed) == 1, text


def test_the_honest_loss_check_counts_the_runs_above_the_limit_and_gives_their_mean() -> None:
    def change(c: Cell) -> dict[str, Any]:
        return {"honest_rounds_lost_share": 0.03} if c.attack == "alie" else {}

    verdict, text, _ = status(change, "Honest client-rounds")
    runs = int(text.split("; ")[1].split(" runs")[0])
    above = int(text.split(" runs, ")[1].split(" above")[0])
    mean = float(text.split("mean over the runs ")[1].rstrip("%)"))
    alie_runs = above  # every other run of the default loses 0.5%, under the 1% limit
    assert verdict == acceptance.FAIL and text.startswith("worst 3.00%")
    assert 0 < above < runs
    assert mean == pytest.approx(
        100 * (0.03 * alie_runs + 0.005 * (runs - alie_runs)) / runs, abs=0.01
    )


def test_checks_without_their_cells_say_not_run() -> None:
    assert {c.status for c in acceptance.checks({})} == {acceptance.NOT_RUN}
    cells = acceptance_grid(plan(partitions=["iid"]))
    found = {c.name: c.status for c in acceptance.checks(group(synthetic(cells)))}
    assert found["No attack, iid: the default <= 1 point below clean FedAvg"] == acceptance.PASS
    assert found["No attack, dirichlet0.1: the default <= 1 point below clean FedAvg"] == (
        acceptance.NOT_RUN
    )


def test_the_report_records_seeds_validation_and_mean_and_worst_seed(tmp_path: Path) -> None:
    from benchmarks.byzantine.report import render

    cells = full_grid(plan(partitions=["dirichlet0.5"], aggregators=[DEFAULT, "fedavg"],
                           attacks=["alie", "backdoor"]))  # fmt: skip
    items = synthetic(cells, lambda c: {"accuracy": 0.80} if c.seed == 12 else {})
    meta = {"dataset": "digits", "overrides": ["rounds=3"], "validation": "scenario",
            "seeds": [11, 12], "seed_source": "drawn at run time"}  # fmt: skip
    checks = render({str(i): item for i, item in enumerate(items)}, meta, stem="t", out=tmp_path,
                    console=Console(file=None, quiet=True))  # fmt: skip
    text = (tmp_path / "t.md").read_text()
    assert "- Seeds: 11, 12 (drawn at run time)" in text and "rounds=3" in text
    assert "`max_relative_norm` included" in text
    assert "Clean FedAvg: 87.5 / 80.0." in text
    assert "## dirichlet0.5, 30% Byzantine, f under-estimated (sized for 20%)" in text
    assert (
        "| fedavg | 87.5 / 80.0 | 82.5 / 80.0 | 82.5 / 80.0 | 82.5 / 80.0 (alie) | 3.0 | 0.50 "
        "| 0.0 / 0 | 10.0 / 10.0 |" in text
    )
    assert (tmp_path / "t.png").exists() and len(checks) == 17


def test_fashion_mnist_runs_end_to_end_through_the_same_path(tmp_path: Path) -> None:
    """Three real cells (2 rounds, a made-up Fashion-MNIST), then a resume that runs none."""
    from tests.unit.test_fashion_mnist import make_dataset

    data = make_dataset(tmp_path / "data", train_per_class=30)
    argv = ["--dataset", "fashion_mnist", "--acceptance", "--partitions", "iid", "--attacks",
            "sign_flip", "--draw-seeds", "1", "--set", "rounds=2", "--set", "eval_every=1",
            "--set", f"workload.path={data}", "--set", "workload.min_samples=1", "--workers",
            "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    # The preset's cells lie beside its report, apart from the full grid's file.
    assert not (tmp_path / "byzantine_fashion_mnist.json").exists()
    stored = json.loads((tmp_path / "byzantine_fashion_mnist_acceptance.json").read_text())
    assert stored["seed_source"] == "drawn at run time" and len(stored["cells"]) == 3
    assert not set(stored["seeds"]) & set(TUNING_SEEDS)
    assert {c["cell"]["aggregator"] for c in stored["cells"].values()} == {DEFAULT, "fedavg"}
    text = (tmp_path / "byzantine_fashion_mnist_acceptance.md").read_text()
    assert "**PASS** No attack, iid" in text or "**FAIL** No attack, iid" in text
    (tmp_path / "byzantine_fashion_mnist_acceptance.md").unlink()
    assert main(argv) == 0  # resumed: the same seeds, nothing left to run
    assert json.loads((tmp_path / "byzantine_fashion_mnist_acceptance.json").read_text()) == stored


def test_overrides_that_leave_the_final_round_unevaluated_are_refused(tmp_path: Path) -> None:
    argv = ["--acceptance", "--partitions", "iid", "--set", "rounds=3", "--out", str(tmp_path)]
    assert main(argv) == 2


def test_the_report_leaves_out_settings_a_preset_did_not_run(tmp_path: Path) -> None:
    from benchmarks.byzantine.report import render

    chosen = plan(partitions=["iid", "dirichlet0.5"], aggregators=[DEFAULT, "fedavg"],
                  attacks=["alie"])  # fmt: skip
    cells = acceptance_grid(chosen)
    items = synthetic(cells, lambda c: {})
    meta = {"dataset": "digits", "overrides": [], "validation": "scenario",
            "seeds": [11], "seed_source": "drawn at run time"}  # fmt: skip
    render({str(i): item for i, item in enumerate(items)}, meta, stem="t", out=tmp_path,
           console=Console(file=None, quiet=True))  # fmt: skip
    text = (tmp_path / "t.md").read_text()
    assert "## iid, 20% Byzantine, f right" in text
    assert "## dirichlet0.5, 30% Byzantine, f right" in text
    assert "## iid, 30% Byzantine" not in text  # the preset runs 30% at Dirichlet 0.5 only
