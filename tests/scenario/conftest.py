"""Small simulated federations for behaviour tests: seconds, not minutes."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.config import RunConfig, build_config
from phalanx.simulation import RunResult, Simulation

BASE: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "rounds": 6,
    "workload": {"name": "seed", "num_clients": 8, "samples_per_client": 48, "test_samples": 80},
    "training": {"local_epochs": 1, "batch_size": 16, "lr": 0.05},
    "selection": {"clients_per_round": 4, "over_selection": 1.25},
    "deadlines": {"task_s": 10.0, "round_s": 40.0},
    "quorum": {"min_updates": 2},
    "checkpoint": {"every": 0},
    "faults": {"enabled": True},
}


def tiny_config(*overrides: str, tree: dict[str, Any] | None = None) -> RunConfig:
    return build_config(tree or BASE, list(overrides))


def run(config: RunConfig) -> RunResult:
    return Simulation(config).run()


def events(result: RunResult, kind: str) -> list[dict[str, Any]]:
    return [
        {**event, "round": record["round"]}
        for record in result.history
        for event in record["events"]
        if event["kind"] == kind
    ]


@pytest.fixture
def config() -> RunConfig:
    return tiny_config()
