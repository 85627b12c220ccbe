"""Robust aggregation inside the engine: what each round's record says the aggregator
discarded or scaled, a tolerance failure discarding the round (not the run), and centred
clipping's carried centre surviving a checkpoint and resume exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from phalanx.aggregation.centered_clipping import STATE_KEY
from phalanx.config import RunConfig, build_config
from phalanx.core.state import ServerState
from phalanx.engine.history import RoundRecord
from phalanx.simulation import Simulation

# A tiny federation (as tests/scenario), six updates a round so Krum with f = 1 (n >= 5) runs.
TREE: dict[str, Any] = {
    "name": "tiny-robust",
    "seed": 3,
    "rounds": 3,
    "workload": {"name": "seed", "num_clients": 8, "samples_per_client": 48, "test_samples": 80},
    "training": {"local_epochs": 1, "batch_size": 16, "lr": 0.05},
    "selection": {"clients_per_round": 6, "over_selection": 1.0},
    "deadlines": {"task_s": 10.0, "round_s": 40.0},
    "quorum": {"min_updates": 5},
    "checkpoint": {"every": 0},
}


def config(*overrides: str, aggregation: dict[str, Any] | None = None) -> RunConfig:
    tree = {**TREE, "aggregation": aggregation or {}}
    return build_config(tree, list(overrides))


def test_each_round_names_the_clients_krum_discarded() -> None:
    result = Simulation(config(aggregation={"name": "krum", "f": 1})).run()

    for record in result.history:
        assert record["committed"], record["reasons"]
        accepted = record["accepted"]
        assert len(accepted) == 6
        assert set(record["discarded"]) < set(accepted)
        assert len(record["discarded"]) == len(accepted) - 1  # Krum keeps exactly one
        assert record["scaled"] == {}


def test_each_round_names_the_clients_clipping_scaled_with_their_factors() -> None:
    aggregation = {
        "name": "multi_krum",
        "f": 1,
        "params": {"m": 3},
        "pre": [{"name": "clipping", "params": {"mode": "static", "threshold": 1e-4}}],
    }

    result = Simulation(config(aggregation=aggregation)).run()

    for record in result.history:
        assert record["committed"], record["reasons"]
        # Every update is longer than 1e-4: every accepted client is scaled, keyed by id.
        assert sorted(record["scaled"]) == sorted(str(c) for c in record["accepted"])
        assert all(0 < factor < 1 for factor in record["scaled"].values())
        assert len(record["discarded"]) == 3  # 6 accepted, m = 3 averaged


def test_a_failed_tolerance_discards_the_round_with_the_inequality_and_the_run_goes_on() -> None:
    cfg = config(aggregation={"name": "bulyan", "f": 1})  # 6 updates; Bulyan needs 7

    result = Simulation(cfg).run()

    assert len(result.history) == 3
    for record in result.history:
        assert not record["committed"]
        assert record["reasons"] == ["aggregation failed: bulyan needs n >= 4f + 3; got n=6, f=1"]
        assert record["discarded"] == [] and record["scaled"] == {}
    assert result.state.model_version == 0
    assert torch.equal(result.params, Simulation(cfg).initial_params)


class SimulatedCrashError(Exception):
    pass


def stop_after(round_index: int) -> Callable[[ServerState, RoundRecord], None]:
    def hook(state: ServerState, record: RoundRecord) -> None:
        if record.round == round_index:
            raise SimulatedCrashError

    return hook


@pytest.mark.parametrize("crash_after", [1, 2])
def test_centred_clipping_resumes_from_its_checkpointed_centre(
    tmp_path: Path, crash_after: int
) -> None:
    cc = {"name": "centered_clipping", "f": 1, "params": {"tau": 0.05, "iterations": 2}}
    cfg = config("rounds=4", "checkpoint.every=1", aggregation=cc)
    reference = Simulation(cfg).run()

    with pytest.raises(SimulatedCrashError):
        Simulation(cfg).run(checkpoint_dir=tmp_path, on_round=[stop_after(crash_after)])
    resumed = Simulation(cfg).run(checkpoint_dir=tmp_path, resume=True)

    centre = reference.state.tensors[STATE_KEY]
    assert centre.abs().sum() > 0  # momentum carried something
    assert torch.equal(resumed.state.tensors[STATE_KEY], centre)
    assert torch.equal(resumed.params, reference.params)
    assert [r["scaled"] for r in resumed.history] == [r["scaled"] for r in reference.history]


def test_without_checkpointed_state_the_resumed_run_would_differ(tmp_path: Path) -> None:
    # The centre matters: starting a round from zero instead of the carried centre gives a
    # different model, so the resume test above would notice a lost state.
    params: dict[str, Any] = {"tau": 0.05, "iterations": 2}
    cc = {"name": "centered_clipping", "f": 1, "params": params}
    no_momentum = {**cc, "params": {**params, "momentum": False}}

    with_centre = Simulation(config(aggregation=cc)).run()
    from_zero = Simulation(config(aggregation=no_momentum)).run()

    assert not torch.equal(with_centre.params, from_zero.params)
