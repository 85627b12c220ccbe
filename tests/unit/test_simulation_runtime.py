"""The simulation runtime turns the fault plan and latency model into timed events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import torch

from phalanx.config import RunConfig, build_config, load_config
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
from phalanx.scenarios import scenario_path
from phalanx.simulation import Simulation
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


def test_a_late_reply_is_a_timeout_and_is_never_trained() -> None:
    rt, trainer = runtime()
    rt.submit(task(0, ttl_s=0.01))  # no client computes ten steps in 10 ms
    [(_, event)] = drain(rt)
    assert isinstance(event, TaskFailure) and event.kind is FailureKind.TIMEOUT
    assert event.detail.startswith("late") and trainer.batches == []


def test_a_batch_is_no_wider_than_the_round_can_still_accept() -> None:
    rt, trainer = runtime()  # two updates fill a round
    for client in range(5):
        rt.submit(task(client))

    async def two_then_cancel() -> None:
        for _ in range(2):
            assert isinstance(await rt.next_event(100.0), ClientUpdate)
        for client in range(5):
            rt.cancel(TaskKey(0, client, 1))

    asyncio.run(two_then_cancel())
    assert [len(b) for b in trainer.batches] == [2]
    assert (rt.training.trained, rt.training.thrown_away) == (2, 0)


def test_a_trained_update_that_is_cancelled_counts_as_thrown_away() -> None:
    rt, _ = runtime()
    for client in range(2):
        rt.submit(task(client))

    async def one_then_cancel() -> None:
        assert isinstance(await rt.next_event(100.0), ClientUpdate)  # trains both
        for client in range(2):
            rt.cancel(TaskKey(0, client, 1))

    asyncio.run(one_then_cancel())
    assert (rt.training.trained, rt.training.thrown_away) == (2, 1)


def test_with_faults_every_trained_update_reaches_the_engine() -> None:
    config = build_config(
        {
            "rounds": 4,
            "workload": {"name": "seed", "num_clients": 200, "samples_per_client": 20},
            "selection": {"clients_per_round": 40},
            "checkpoint": {"every": 0},
            "faults": {"rules": [{"rate": 0.2}]},
        },
        [],
    )
    result = Simulation(config).run()
    cancelled = sum(record["cancelled"] for record in result.history)
    assert cancelled > 0 and result.training.trained >= 4 * 40
    assert result.training.thrown_away == 0


def test_a_task_that_cannot_finish_in_its_ttl_sends_the_steps_that_fit() -> None:
    """Partial work: 0.5 s each way and 0.05 s a step, so 6 of 10 steps fit in 1.32 s.
    Below the policy's minimum share (or with partial work off) the client plans all 10,
    which take 1.5 s: its reply is late, a timeout, and never trained."""
    rt, trainer = runtime(extra=["latency.network_jitter_s=0"])
    rt.submit(task(0, ttl_s=1.32, partial=PartialWork(enabled=True, min_fraction=0.5)))
    rt.submit(task(1, ttl_s=1.32, partial=PartialWork(enabled=True, min_fraction=0.7)))
    rt.submit(task(2, ttl_s=1.32, partial=PartialWork(enabled=False)))
    events = {e.key.client: e for _, e in drain(rt)}  # type: ignore[attr-defined]
    update = events[0]
    assert isinstance(update, ClientUpdate) and (update.steps_done, update.steps_planned) == (6, 10)
    late = "late: reply due at t=1.50, deadline t=1.32"
    for client in (1, 2):
        failure = events[client]
        assert isinstance(failure, TaskFailure) and failure.kind is FailureKind.TIMEOUT
        assert failure.detail == late
    assert trainer.batches == [[0]]


class NarrowTrainer(CountingTrainer):
    """A ``CountingTrainer`` whose memory bound allows two clients at once."""

    max_batch = 2


def test_a_batch_is_no_wider_than_the_trainers_memory_bound() -> None:
    """Five replies a round can use train two at a time, and no more than two trained
    updates ever wait for delivery: the round's width no longer sets the memory."""
    config = build_config(
        {"workload": {"num_clients": 10}, "selection": {"clients_per_round": 5}},
        ["latency.speed_sigma=0"],
    )
    trainer = NarrowTrainer()
    rt = SimulationRuntime(config, trainer, MANIFEST, num_clients=10, models=BOOK)
    for client in range(5):
        rt.submit(task(client))

    async def deliver_all() -> list[int]:
        waiting = []
        while await rt.next_event(100.0) is not None:
            waiting.append(sum(p.outcome is not None for p in rt._pending.values()))
        return waiting

    waiting = asyncio.run(deliver_all())
    assert len(waiting) == 5 and max(waiting) <= 1  # the batch's other update, if any
    assert [len(b) for b in trainer.batches] == [2, 2, 1]
    assert (rt.training.trained, rt.training.thrown_away) == (5, 0)


def test_a_memory_bound_of_one_client_changes_no_result() -> None:
    """The seed scenario with heavier faults and partial work, trained one client at a time
    or a round at once: the same history, bit for bit (only wall-clock times differ)."""
    faults = '[{rate = 0.4, kinds = ["crash", "hang", "corrupt", "straggle"]}]'

    def history(*overrides: str) -> list[dict[str, object]]:
        config = load_config(
            scenario_path("seed"),
            ["rounds=5", "checkpoint.every=0", f"faults.rules={faults}",
             "partial_work.enabled=true", *overrides],
        )  # fmt: skip
        records = Simulation(config).run().history
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]

    assert history("simulation.max_batch_bytes=1") == history()
