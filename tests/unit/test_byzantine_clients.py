"""Who is Byzantine: the listed clients, or a seeded draw fixed for the whole run."""

from __future__ import annotations

import pytest
from tests.scenario.conftest import tiny_config

from phalanx.config import ByzantineConfig, FaultConfig
from phalanx.core.messages import TaskKey
from phalanx.errors import ConfigError
from phalanx.faults.byzantine import byzantine_clients
from phalanx.faults.plan import FaultPlan
from phalanx.simulation import Simulation


def test_listed_clients_are_the_byzantine_ones() -> None:
    config = ByzantineConfig(clients=(4, 1))
    assert byzantine_clients(config, num_clients=5, seed=0) == frozenset({1, 4})


def test_listed_ids_outside_the_federation_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"clients \[5, 7\] are not client ids \(0..4\)"):
        byzantine_clients(ByzantineConfig(clients=(1, 5, 7)), num_clients=5, seed=0)


def test_clients_and_fraction_together_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="clients or fraction, not both"):
        byzantine_clients(ByzantineConfig(clients=(1,), fraction=0.2), num_clients=5, seed=0)


@pytest.mark.parametrize(
    ("fraction", "num_clients", "count"), [(0.2, 8, 2), (0.25, 10, 3), (0.2, 20, 4), (0.0, 9, 0)]
)
def test_fraction_draws_that_share_rounded_half_up(
    fraction: float, num_clients: int, count: int
) -> None:
    chosen = byzantine_clients(ByzantineConfig(fraction=fraction), num_clients, seed=3)
    assert len(chosen) == count
    assert all(0 <= c < num_clients for c in chosen)


def test_the_draw_is_a_function_of_the_seed() -> None:
    config = ByzantineConfig(fraction=0.3)
    draws = {seed: byzantine_clients(config, 20, seed) for seed in range(5)}
    assert draws == {seed: byzantine_clients(config, 20, seed) for seed in range(5)}
    assert len(set(draws.values())) > 1


def test_a_fraction_too_small_for_one_client_warns(caplog: pytest.LogCaptureFixture) -> None:
    assert byzantine_clients(ByzantineConfig(fraction=0.01), 10, seed=0) == frozenset()
    assert "rounds to no Byzantine client" in caplog.text


def test_attacks_are_logged_with_kind_byzantine_and_counted() -> None:
    plan = FaultPlan(FaultConfig(), seed=0)
    plan.record_attack(TaskKey(2, 7, 1), "alie")
    assert plan.fired(2) == [
        {"round": 2, "client": 7, "attempt": 1, "kind": "byzantine", "detail": "alie"}
    ]
    assert plan.counts["byzantine"] == 1


def test_simulation_refuses_an_unknown_attack_before_running() -> None:
    with pytest.raises(
        ConfigError, match="unknown attack 'krum'; valid: alie, alie_optimal, backdoor"
    ):
        Simulation(tiny_config("faults.byzantine.attack=krum"))


def test_simulation_refuses_byzantine_ids_it_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"\[8\] are not client ids \(0..7\)"):
        Simulation(tiny_config("faults.byzantine.clients=[8]"))


def test_simulation_knows_its_byzantine_clients() -> None:
    sim = Simulation(tiny_config("faults.byzantine.fraction=0.25"))
    assert sim.byzantine == byzantine_clients(ByzantineConfig(fraction=0.25), 8, seed=3)
    assert len(sim.byzantine) == 2
