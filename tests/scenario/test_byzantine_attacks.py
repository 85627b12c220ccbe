"""Byzantine clients in a whole simulated run: who attacks, what they send, what the model
learns, and that a run under attack is still deterministic and resumes exactly."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from phalanx.client import TrainContext
from phalanx.config import RunConfig
from phalanx.coordinator import MemoryHistory, RunLifecycle
from phalanx.core.messages import ClientUpdate, Event, TaskKey
from phalanx.core.models import ModelBook
from phalanx.core.tensors import flatten
from phalanx.engine.engine import Engine
from phalanx.errors import ConfigError
from phalanx.faults.poisoning import flip_labels
from phalanx.observability.summary import summarize
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.runtime.inprocess.trainers import TrainJob
from phalanx.simulation import Simulation
from phalanx.workloads import build_workload
from phalanx.workloads.base import ClientData
from tests.scenario.conftest import BASE, tiny_config
from tests.scenario.test_resume import SimulatedCrashError, stop_after

DIGITS: dict[str, Any] = {
    **BASE,
    "workload": {"name": "digits", "num_clients": 10},
    "rounds": 3,
    "selection": {"clients_per_round": 5, "over_selection": 1.2},
}


def digits(*overrides: str) -> RunConfig:
    return tiny_config(*overrides, tree=DIGITS)


def attacks(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        item for record in history for item in record["injected"] if item["kind"] == "byzantine"
    ]


def test_sign_flip_records_byzantine_faults_for_exactly_the_byzantine_clients() -> None:
    sim = Simulation(digits("faults.byzantine.fraction=0.2", "faults.rules=[{rate=0.2}]"))
    result = sim.run()
    assert len(sim.byzantine) == 2
    logged = {(item["round"], item["client"], item["attempt"]) for item in attacks(result.history)}
    assert logged and {client for _, client, _ in logged} <= sim.byzantine
    assert {item["detail"] for item in attacks(result.history)} == {"sign_flip"}
    for record in result.history:  # every Byzantine update that reached the model was logged
        accepted = zip(record["accepted"], record["accepted_attempts"], strict=True)
        for client, attempt in accepted:
            assert ((record["round"], client, attempt) in logged) == (client in sim.byzantine)
    summary = summarize(result.history, wall_time_s=0.0, train_time_s=0.0)
    assert (
        summary["faults_injected"]["byzantine"] == len(logged) == result.faults_fired["byzantine"]
    )


class Spy:
    """Captures every update a runtime delivers."""

    def __init__(self, runtime: SimulationRuntime) -> None:
        self.updates: list[ClientUpdate] = []
        self._next = runtime.next_event

    async def __call__(self, until: float) -> Event | None:
        event = await self._next(until)
        if isinstance(event, ClientUpdate):
            self.updates.append(event)
        return event


def sent_updates(config: RunConfig) -> tuple[list[ClientUpdate], Simulation]:
    sim = Simulation(config)
    models = ModelBook(sim.manifest)  # shared: the engine publishes, the runtime resolves
    runtime = SimulationRuntime(
        config, sim._trainer, sim.manifest, num_clients=len(sim.clients), models=models
    )
    spy = Spy(runtime)
    runtime.next_event = spy  # type: ignore[method-assign]
    engine = Engine(config, runtime, membership=runtime.membership, models=models)
    asyncio.run(
        RunLifecycle(config, store=None, history=MemoryHistory()).run(
            engine.run_round, engine.initial_state(sim.initial_params, sim.manifest)
        )
    )
    return spy.updates, sim


@pytest.mark.parametrize("attack", ["alie", "ipm"])
def test_colluders_send_identical_vectors_within_a_round(attack: str) -> None:
    config = digits(f"faults.byzantine.attack={attack}", "faults.byzantine.fraction=0.4")
    updates, sim = sent_updates(config)
    by_round: dict[int, dict[TaskKey, torch.Tensor]] = {}
    for update in updates:
        by_round.setdefault(update.key.round, {})[update.key] = flatten(
            update.tensors, sim.manifest
        )
    colluding_rounds = 0
    for vectors in by_round.values():
        byzantine = [v for k, v in vectors.items() if k.client in sim.byzantine]
        honest = [v for k, v in vectors.items() if k.client not in sim.byzantine]
        assert all(torch.equal(v, byzantine[0]) for v in byzantine[1:])
        assert not any(torch.equal(v, b) for v in honest for b in byzantine[:1])
        colluding_rounds += len(byzantine) >= 2
    assert colluding_rounds >= 1


@pytest.mark.parametrize("attack", ["label_flip", "backdoor"])
def test_data_attacks_change_only_the_byzantine_clients_data(attack: str) -> None:
    config = digits(f"faults.byzantine.attack={attack}", "faults.byzantine.fraction=0.2")
    sim = Simulation(config)
    clean = build_workload(config.workload, config.seed).clients
    for client, (data, original) in enumerate(zip(sim.clients, clean, strict=True)):
        same = torch.equal(data.x, original.x) and torch.equal(data.y, original.y)
        assert same == (client not in sim.byzantine)
    for client in sim.byzantine:
        if attack == "label_flip":
            assert torch.equal(sim.clients[client].y, flip_labels(clean[client].y, 10))
        else:
            changed = (sim.clients[client].y != clean[client].y) | (
                sim.clients[client].x != clean[client].x
            ).any(dim=1)
            assert 0 < int(changed.sum()) <= (len(clean[client]) + 1) // 2
            assert bool((sim.clients[client].y[changed] == 0).all())


def test_backdoor_success_rate_is_reported_every_round() -> None:
    result = Simulation(
        digits("faults.byzantine.attack=backdoor", "faults.byzantine.fraction=0.3")
    ).run()
    for record in result.history:
        assert 0.0 <= record["metrics"]["backdoor_asr"] <= 1.0
        assert "accuracy" in record["metrics"]
    assert {item["detail"] for item in attacks(result.history)} == {"backdoor"}


def test_backdoor_needs_image_data() -> None:
    with pytest.raises(ConfigError, match="needs image data"):
        Simulation(
            tiny_config("faults.byzantine.attack=backdoor", "faults.byzantine.fraction=0.25")
        )


def test_data_attacks_refuse_a_trainer_factory_that_keeps_the_data() -> None:
    config = tiny_config("faults.byzantine.attack=label_flip", "faults.byzantine.fraction=0.25")
    workload = build_workload(config.workload, config.seed)
    with pytest.raises(ConfigError, match="trainer= factory"):
        Simulation(
            config,
            model=workload.make_model,
            clients=workload.clients,
            trainer=lambda model, manifest: None,
        )  # type: ignore[arg-type,return-value]


def test_runs_under_attack_are_deterministic() -> None:
    config = digits(
        "faults.byzantine.attack=alie", "faults.byzantine.fraction=0.3", "faults.rules=[{rate=0.3}]"
    )
    first, again = Simulation(config).run(), Simulation(config).run()
    assert torch.equal(first.params, again.params)
    strip = ("wall_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in first.history] == [
        {k: v for k, v in r.items() if k not in strip} for r in again.history
    ]


@pytest.mark.parametrize("attack", ["alie", "backdoor", "gaussian"])
def test_a_run_under_attack_resumes_to_the_identical_model(tmp_path: Path, attack: str) -> None:
    config = digits(
        f"faults.byzantine.attack={attack}",
        "faults.byzantine.fraction=0.3",
        "faults.rules=[{rate=0.3}]",
        "checkpoint.every=1",
        "rounds=4",
    )
    reference = Simulation(config).run()
    assert attacks(reference.history)
    with pytest.raises(SimulatedCrashError):
        Simulation(config).run(checkpoint_dir=tmp_path, on_round=[stop_after(1)])
    resumed = Simulation(config).run(checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed.params, reference.params)
    assert [r["injected"] for r in resumed.history] == [r["injected"] for r in reference.history]


def label_sum(model: nn.Module, data: ClientData, ctx: TrainContext) -> Mapping[str, float]:
    return {"label_sum": float(data.y.sum())}


@pytest.mark.timeout(60)
def test_user_training_in_worker_processes_sees_the_poisoned_data() -> None:
    config = tiny_config(
        "faults.byzantine.attack=label_flip", "faults.byzantine.clients=[1]", "simulation.workers=1"
    )
    workload = build_workload(config.workload, config.seed)
    with Simulation(
        config, model=workload.make_model, clients=workload.clients, train=label_sum
    ) as sim:
        jobs = [TrainJob(TaskKey(0, client, 0), 1) for client in (0, 1)]
        outcomes = sim._trainer.train(sim.initial_params, jobs)
    sums = [out.metrics["label_sum"] for out in outcomes]
    assert sums[0] == float(workload.clients[0].y.sum())
    assert sums[1] == float(flip_labels(workload.clients[1].y, 10).sum())
    assert multiprocessing.active_children() == []
