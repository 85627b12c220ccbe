"""The simulation runtime turns the fault plan and latency model into timed events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import torch

from phalanx.config import RunConfig, build_config
from phalanx.core.messages import (
    ClientUpdate,
    Envelope,
    PartialWork,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.runtime.inprocess.trainers import TrainJob, TrainOutcome
from phalanx.types import FailureKind

MANIFEST = Manifest.of({"w": torch.zeros(3)})
GLOBAL = torch.zeros(3)  # one round's tasks share the global model (trained together)


class CountingTrainer:
    """Adds the client id to every weight; counts the batches it was asked for."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def total_steps(self, client: int) -> int:
        return 10

    def num_examples(self, client: int) -> int:
        return 5

    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        self.batches.append([job.key.client for job in jobs])
        return [TrainOutcome({"w": params + job.key.client}, 5, {}) for job in jobs]


def runtime(*schedule: str, extra: Sequence[str] = ()) -> tuple[SimulationRuntime, CountingTrainer]:
    config: RunConfig = build_config(
        {
            "workload": {"num_clients": 10},
            "selection": {"clients_per_round": 2},
            "quorum": {"min_updates": 1},
        },
        [f"faults.schedule=[{', '.join(schedule)}]", "latency.speed_sigma=0", *extra],
    )
    trainer = CountingTrainer()
    rt = SimulationRuntime(config, trainer, MANIFEST, num_clients=10, models=BOOK)
    return rt, trainer


BOOK = ModelBook(MANIFEST)
REF = BOOK.publish(0, GLOBAL)  # what the engine would publish for the round


def task(client: int, ttl_s: float = 100.0, partial: PartialWork | None = None) -> TrainTask:
    config = TaskConfig(3, 32, 0.01, ttl_s, partial=partial or PartialWork())
    return TrainTask(Envelope(), TaskKey(0, client, 1), REF, config)


def drain(rt: SimulationRuntime, until: float = 100.0) -> list[tuple[float, object]]:
    async def collect() -> list[tuple[float, object]]:
        out = []
        while (event := await rt.next_event(until)) is not None:
            out.append((rt.clock.now(), event))
        return out

    return asyncio.run(collect())


def test_each_fault_becomes_the_event_a_transport_would_see() -> None:
    rt, trainer = runtime(
        "{round=0, client=1, kind='crash'}",
        "{round=0, client=2, kind='hang'}",
        "{round=0, client=3, kind='drop'}",
    )
    for client in (0, 1, 2, 3):
        rt.submit(task(client))
    events = drain(rt)
    kinds = {e.key.client: (e.kind if isinstance(e, TaskFailure) else "update") for _, e in events}
    assert kinds == {0: "update", 1: FailureKind.CRASH, 3: FailureKind.DROP}  # 2 hangs: silent
    times = [t for t, _ in events]
    assert times == sorted(times) and rt.clock.now() == 100.0
    update = next(e for _, e in events if isinstance(e, ClientUpdate))
    assert torch.equal(update.tensors["w"], torch.zeros(3))
    assert update.sender == 0 and update.base == REF  # stamped by the transport; echoed
    assert (update.steps_done, update.steps_planned) == (10, 10)
    assert sorted(c for batch in trainer.batches for c in batch) == [0]  # a drop trains nothing


def test_cancelled_tasks_are_never_trained_or_delivered() -> None:
    rt, trainer = runtime()
    for client in range(5):
        rt.submit(task(client))
    for client in (3, 4):
        rt.cancel(TaskKey(0, client, 1))
    events = drain(rt)
    assert sorted(e.key.client for _, e in events) == [0, 1, 2]
    assert sum(len(b) for b in trainer.batches) == 3
    assert max(len(b) for b in trainer.batches) == 2  # batched up to clients_per_round


def test_next_event_waits_only_until_asked() -> None:
    rt, _ = runtime()
    rt.submit(task(0))
    assert drain(rt, until=0.1) == []
    assert rt.clock.now() == 0.1
    assert len(drain(rt, until=100.0)) == 1


def test_a_task_that_cannot_finish_in_its_ttl_sends_the_steps_that_fit() -> None:
    """Partial work: 0.5 s each way and 0.05 s a step, so 6 of 10 steps fit in 1.32 s.
    Below the policy's minimum share (or with partial work off) the client plans all 10."""
    rt, _ = runtime(extra=["latency.network_jitter_s=0"])
    rt.submit(task(0, ttl_s=1.32, partial=PartialWork(enabled=True, min_fraction=0.5)))
    rt.submit(task(1, ttl_s=1.32, partial=PartialWork(enabled=True, min_fraction=0.7)))
    rt.submit(task(2, ttl_s=1.32, partial=PartialWork(enabled=False)))
    events = {e.key.client: e for _, e in drain(rt)}
    assert all(isinstance(e, ClientUpdate) for e in events.values())
    steps = {c: (e.steps_done, e.steps_planned) for c, e in events.items()}  # type: ignore[union-attr]
    assert steps == {0: (6, 10), 1: (10, 10), 2: (10, 10)}
