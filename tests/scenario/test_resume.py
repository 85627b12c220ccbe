"""Checkpoints, first cut: a run interrupted after any round resumes to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phalanx.core.state import ServerState
from phalanx.engine.history import RoundRecord
from phalanx.errors import CheckpointError
from phalanx.simulation import Simulation
from tests.scenario.conftest import tiny_config


class SimulatedCrashError(Exception):
    pass


def stop_after(round_index: int):  # type: ignore[no-untyped-def]
    def hook(state: ServerState, record: RoundRecord) -> None:
        if record.round == round_index:
            raise SimulatedCrashError

    return hook


@pytest.mark.parametrize("crash_after", [1, 2, 4])
def test_interrupted_run_resumes_to_the_identical_model(tmp_path: Path, crash_after: int) -> None:
    config = tiny_config("faults.rules=[{rate=0.3}]", "checkpoint.every=2", "rounds=6")
    reference = Simulation(config).run()
    with pytest.raises(SimulatedCrashError):
        Simulation(config).run(checkpoint_dir=tmp_path, on_round=[stop_after(crash_after)])
    resumed = Simulation(config).run(checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed.params, reference.params)
    assert [r["accepted"] for r in resumed.history] == [r["accepted"] for r in reference.history]
    assert len(resumed.history) == 6


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path: Path) -> None:
    Simulation(tiny_config("checkpoint.every=1", "rounds=2")).run(checkpoint_dir=tmp_path)
    other = tiny_config("checkpoint.every=1", "rounds=2", "training.lr=0.5")
    with pytest.raises(CheckpointError, match="another configuration"):
        Simulation(other).run(checkpoint_dir=tmp_path, resume=True)


def test_a_finished_run_can_be_extended(tmp_path: Path) -> None:
    short = tiny_config("checkpoint.every=1", "rounds=2")
    Simulation(short).run(checkpoint_dir=tmp_path)
    longer = tiny_config("checkpoint.every=1", "rounds=4")
    extended = Simulation(longer).run(checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(extended.params, Simulation(longer).run().params)


def test_resume_takes_the_newest_checkpoint_of_this_configuration(tmp_path: Path) -> None:
    """An older run of another configuration left higher rounds in the store: resume skips
    them and ends with this configuration's uninterrupted model, not the other run's."""
    other = tiny_config("checkpoint.every=1", "checkpoint.keep=10", "rounds=6", "seed=11")
    Simulation(other).run(checkpoint_dir=tmp_path)
    ours = tiny_config("checkpoint.every=1", "checkpoint.keep=10", "rounds=4")
    with pytest.raises(SimulatedCrashError):
        Simulation(ours).run(checkpoint_dir=tmp_path, on_round=[stop_after(1)])
    resumed = Simulation(ours).run(checkpoint_dir=tmp_path, resume=True)
    reference = Simulation(ours).run()
    assert torch.equal(resumed.params, reference.params)
    assert [r["accepted"] for r in resumed.history] == [r["accepted"] for r in reference.history]


def test_observers_hear_of_a_round_only_after_its_checkpoint_is_durable(tmp_path: Path) -> None:
    seen: list[tuple[int, bool]] = []

    def observe(state: ServerState, record: RoundRecord) -> None:
        seen.append((state.round, (tmp_path / f"round-{state.round:08d}").is_dir()))

    Simulation(tiny_config("checkpoint.every=2", "rounds=5")).run(
        checkpoint_dir=tmp_path, on_round=[observe]
    )
    assert seen == [(1, False), (2, True), (3, False), (4, True), (5, True)]


def test_a_checkpoint_does_not_grow_with_the_round_number(tmp_path: Path) -> None:
    config = tiny_config("checkpoint.every=1", "checkpoint.keep=100", "rounds=30")
    Simulation(config).run(checkpoint_dir=tmp_path)
    size = {r: (tmp_path / f"round-{r:08d}" / "state.json").stat().st_size for r in (2, 30)}
    state = json.loads((tmp_path / "round-00000030" / "state.json").read_text())
    assert "history" not in state and state["last_record"]["round"] == 29
    assert size[30] < 1.2 * size[2], size  # it grew by about 0.9 KB a round before
