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


# --- the floor: flags never shrink the healthy pool below what the rule needs ---------------

# No attacker at all, and a policy harsh enough that every flag sidelines for the rest of the
# run: centred clipping flags its f = 2 least aligned rows every round, so without a floor
# the pool would empty. The floor is 2f + 1 = 5 healthy clients.
HARSH = (
    "faults.byzantine.fraction=0.0",
    "aggregation.params.flag_alignment=1.0",
    "health.sideline_below=0.9",
    "health.cooldown_rounds=50",
)


def test_flags_never_sideline_the_pool_below_the_rules_tolerance() -> None:
    sim = Simulation(config(*HARSH))
    history = sim.run().history
    assert all(record["committed"] for record in history)
    assert all(record["sidelined"] <= 10 - 5 for record in history)
    assert max(record["sidelined"] for record in history) == 5  # the floor binds
    went = [c for record in history for c in record.get("flag_sidelined", [])]
    assert len(went) == len(set(went)) == 5
    last = history[-1]
    assert len(last["flagged"]) == 2 and "flag_sidelined" not in last  # flagged, kept


def test_a_flag_past_the_floor_costs_the_score_but_not_the_place() -> None:
    monitor = HealthMonitor(HealthConfig(decay=0.5, sideline_below=0.3))
    opening = ClientHealth(score=0.5, successes=3, failures=1)
    after = monitor.success(opening)
    kept = monitor.flag(opening, after, round_index=4, may_sideline=False)
    assert kept.score == 0.25 and (kept.successes, kept.failures) == (3, 2)
    assert kept.state is HealthState.HEALTHY and kept.sidelined_until == after.sidelined_until


class Index:
    """Just what flagging reads of the health index."""

    def __init__(self, scores: dict[int, float]) -> None:
        self.table = {c: ClientHealth(score=s) for c, s in scores.items()}
        self._opening = dict(self.table)
        self.healthy = set(scores)

    def opening(self, client: int) -> ClientHealth:
        return self._opening[client]

    def set(self, client: int, health: ClientHealth) -> None:
        self.table[client] = health
        if health.state is not HealthState.HEALTHY:
            self.healthy.discard(client)


def test_when_flags_compete_for_the_room_the_lowest_score_goes_first() -> None:
    monitor = HealthMonitor(HealthConfig(decay=0.5, sideline_below=0.4))
    index = Index({0: 0.7, 1: 0.5, 2: 0.6, 3: 1.0, 4: 1.0})
    went = monitor.apply_flags(index, [0, 1, 2], round_index=3, floor=3, set_health=index.set)
    assert went == [1, 2]  # 0.25 and 0.3 fall under 0.4; then the pool is at its floor
    assert index.table[0].state is HealthState.HEALTHY and index.table[0].score == 0.35
    assert index.healthy == {0, 3, 4}
