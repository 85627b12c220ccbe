"""The user-model benchmark's one-core diagnostic: the line it prints reads each row's own
time inside ``train()``, and stays silent when a row it needs was not run."""

from __future__ import annotations

from benchmarks.user_model import CONTENDERS, ONE_CORE, Runs, verdicts


def _runs(fn_cpu: dict[str, list[float]]) -> dict[str, Runs]:
    return {name: Runs(fn_cpu=values) for name, values in fn_cpu.items()}


def test_the_one_core_line_compares_the_three_rows_time_in_train() -> None:
    runs = _runs(
        {"plain": [1.70, 1.66], "phalanx-1": [1.80, 1.76, 1.78], "phalanx-1-onecore": [1.72]}
    )
    line = verdicts(runs)[-1]
    assert "plain loop 1.68 s" in line
    assert "other core 1.78 s" in line
    assert "own core 1.72 s" in line


def test_no_one_core_line_without_the_rows_it_compares() -> None:
    assert not any("own core" in v for v in verdicts(_runs({"plain": [1.7], "phalanx-1": [1.8]})))
    assert not any("own core" in v for v in verdicts(_runs({"phalanx-1-onecore": [1.7]})))


def test_the_one_core_contender_is_a_one_worker_run() -> None:
    name = next(n for n in CONTENDERS if n.endswith(ONE_CORE))
    assert name.removesuffix(ONE_CORE) == "phalanx-1"
