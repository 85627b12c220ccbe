"""What the engine really puts on the wire in a run, and what it accepts back.

A tiny federation, with the runtime's ``submit`` and ``next_event`` spied on: every task
names the round's published model by reference and carries a time-to-live and the run's
training configuration (never a coordinator-clock time); every update the engine accepts
came from the task's own client, echoed the task's model and survives the codec.
"""

from __future__ import annotations

import asyncio

import torch

from phalanx.coordinator import MemoryHistory, RunLifecycle
from phalanx.core.codec import decode_as, encode
from phalanx.core.messages import ClientUpdate, Event, TrainTask
from phalanx.core.models import ModelBook
from phalanx.core.tensors import payload_digest, unflatten
from phalanx.engine.engine import Engine
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.simulation import Simulation
from tests.scenario.conftest import tiny_config


def test_tasks_carry_a_reference_a_ttl_and_the_training_config() -> None:
    config = tiny_config("rounds=2", "partial_work.enabled=true")
    sim = Simulation(config)
    models = ModelBook(sim.manifest)
    runtime = SimulationRuntime(
        config, sim._trainer, sim.manifest, num_clients=len(sim.clients), models=models
    )
    tasks: list[TrainTask] = []
    updates: list[ClientUpdate] = []
    submit, next_event = runtime.submit, runtime.next_event

    def spy_submit(task: TrainTask) -> None:
        tasks.append(task)
        submit(task)

    async def spy_next(until: float) -> Event | None:
        event = await next_event(until)
        if isinstance(event, ClientUpdate):
            updates.append(event)
        return event

    runtime.submit = spy_submit  # type: ignore[method-assign]
    runtime.next_event = spy_next  # type: ignore[method-assign]
    engine = Engine(
        config, runtime, membership=runtime.membership, models=models, run_id="run-7f3a"
    )
    lifecycle = RunLifecycle(config, store=None, history=MemoryHistory())
    initial = engine.initial_state(sim.initial_params, sim.manifest)
    state = asyncio.run(lifecycle.run(engine.run_round, lifecycle.start(initial, resume=False)))

    first = [t for t in tasks if t.key.round == 0]
    assert first and all(t.model.version == 0 for t in first)
    assert first[0].model.sha256 == payload_digest(unflatten(sim.initial_params, sim.manifest))
    assert {t.envelope.run_id for t in tasks} == {"run-7f3a"}  # the run's id (run.json)
    assert all(t.envelope.epoch == 0 for t in tasks)
    for task in tasks:
        assert 0 < task.config.ttl_s <= config.deadlines.task_s
        assert (task.config.local_epochs, task.config.batch_size, task.config.lr) == (
            config.training.local_epochs, config.training.batch_size, config.training.lr,
        )  # fmt: skip
        assert task.config.partial.enabled and task.config.max_steps is None
    assert {t.model.version for t in tasks if t.key.round == 1} == {state.model_version - 1}

    assert updates
    for update in updates:
        assert update.sender == update.key.client
        assert update.base == next(t.model for t in tasks if t.key == update.key)
        decoded = decode_as(encode(update), ClientUpdate)
        assert decoded.key == update.key and decoded.digest == update.digest
        assert all(torch.equal(decoded.tensors[n], t) for n, t in update.tensors.items())
