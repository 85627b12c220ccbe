"""A round whose update stack cannot fit the memory budget is refused before dispatch."""

from __future__ import annotations

import asyncio

import torch

from phalanx.core.models import ModelBook
from phalanx.engine.engine import Engine
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.simulation import Simulation
from tests.scenario.conftest import tiny_config


class StackingMean:
    name = "stacking-mean"

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return updates.mean(dim=0)


def test_stacking_aggregator_over_budget_discards_the_round_without_asking_anyone() -> None:
    config = tiny_config("rounds=1", "aggregation.memory_budget_bytes=1000")
    sim = Simulation(config)
    models = ModelBook(sim.manifest)
    runtime = SimulationRuntime(config, sim._trainer, sim.manifest, num_clients=8, models=models)
    engine = Engine(
        config, runtime, membership=runtime.membership, aggregator=StackingMean(), models=models
    )
    state, round_record = asyncio.run(
        engine.run_round(engine.initial_state(sim.initial_params, sim.manifest))
    )
    record = round_record.to_json()
    assert not record["committed"] and record["dispatched"] == []
    assert "exceeds aggregation.memory_budget_bytes = 1000" in record["reasons"][0]
    assert torch.equal(state.params, sim.initial_params)


def test_streaming_fedavg_needs_no_budget_for_the_stack() -> None:
    config = tiny_config("rounds=2", "aggregation.memory_budget_bytes=1000")
    result = Simulation(config).run()
    assert all(record["committed"] for record in result.history)
