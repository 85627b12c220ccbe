"""The health monitor learns from the aggregator: centred clipping flags updates that point
against the server momentum, and clients flagged round after round are sidelined."""

from __future__ import annotations

from typing import Any

from phalanx.config import HealthConfig, RunConfig
from phalanx.core.state import ClientHealth
from phalanx.engine.health import HealthMonitor
from phalanx.simulation import Simulation
from phalanx.types import HealthState
from tests.scenario.conftest import BASE, tiny_config

DIGITS: dict[str, Any] = {
    **BASE,
    "workload": {"name": "digits", "num_clients": 10, "dirichlet_alpha": None},
    "rounds": 12,
    "training": {"local_epochs": 1, "batch_size": 32, "lr": 0.1},
    "selection": {"clients_per_round": 10, "over_selection": 1.0},
    "aggregation": {
        "name": "centered_clipping",
        "f": 2,
        "params": {"flag_alignment": 0.0},
        "health_feedback": True,
    },
    "faults": {"enabled": False, "byzantine": {"fraction": 0.2, "attack": "sign_flip"}},
}


def config(*overrides: str) -> RunConfig:
    return tiny_config(*overrides, tree=DIGITS)


def test_a_flag_turns_the_rounds_success_into_a_failure() -> None:
    monitor = HealthMonitor(HealthConfig(decay=0.5, sideline_below=0.3))
    opening = ClientHealth(score=0.5, successes=3, failures=1)
    after = monitor.success(opening)  # the update was accepted first: score 0.75
    flagged = monitor.flag(opening, after, round_index=4)
    assert flagged.score == 0.25  # a failure from the opening score, not from 0.75
    assert (flagged.successes, flagged.failures) == (3, 2)
    assert flagged.state is HealthState.SIDELINED and flagged.sidelined_until == 4 + 1 + 3


def test_sign_flippers_are_flagged_and_sidelined_honest_clients_are_not() -> None:
    sim = Simulation(config())
    history = sim.run().history
    flagged = [c for record in history for c in record["flagged"]]
    assert set(flagged) == set(sim.byzantine)  # round 0 has no momentum: nothing flagged
    asked_late = {c for record in history[6:] for c in record["dispatched"]}
    honest = set(range(10)) - set(sim.byzantine)
    assert honest <= asked_late
    assert not (set(sim.byzantine) & {c for r in history[4:7] for c in r["dispatched"]})


def test_without_feedback_flags_are_reported_but_nobody_is_sidelined() -> None:
    sim = Simulation(config("aggregation.health_feedback=false"))
    history = sim.run().history
    assert {c for record in history for c in record["flagged"]} == set(sim.byzantine)
    assert all(sorted(record["dispatched"]) == list(range(10)) for record in history)
