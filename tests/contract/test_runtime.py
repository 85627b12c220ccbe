"""The Runtime contract: what every runtime must do, run against each implementation.

A runtime only moves messages, but the engine relies on how it moves them: at most one
event per submitted key (a client's duplicate is absorbed), none for a cancelled or never
submitted key, no event after ``until`` and None only once ``until`` has passed, cancel and
close idempotent; and when a member leaves mid-task, the engine sees that task fail and
asks someone else. Add a runtime by adding a harness to ``HARNESSES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch

from phalanx.config import RunConfig
from phalanx.core.messages import Envelope, Event, TaskConfig, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.engine.membership import Membership
from phalanx.engine.ports import Runtime
from phalanx.engine.selection import sample_clients
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.runtime.inprocess.trainers import TrainJob, TrainOutcome
from phalanx.testing import Reply, ScriptedRuntime
from phalanx.types import ClientId
from tests.twin import MANIFEST, one_round, twin_config

PARAMS = torch.zeros(MANIFEST.dim)


def published() -> ModelBook:
    """A runtime's model book holding the tasks' model (version 0), as the engine leaves it."""
    book = ModelBook(MANIFEST)
    book.publish(0, PARAMS)
    return book


REF = published().publish(0, PARAMS)  # the same tensors: the same reference in every book


class OffsetTrainer:
    """The simulation's trainer stand-in: adds 0.01 to every weight, no SGD."""

    def total_steps(self, client: int) -> int:
        return 4

    def num_examples(self, client: int) -> int:
        return 10

    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        return [TrainOutcome({"w": params + 0.01}, 10, {}) for _ in jobs]


@dataclass
class Harness:
    runtime: Runtime
    membership: Membership
    leave_at: Callable[[ClientId, float], None]  # make a member leave at a clock time


def simulation(config: RunConfig) -> Harness:
    runtime = SimulationRuntime(
        config, OffsetTrainer(), MANIFEST, num_clients=10, models=published()
    )
    inner = runtime.next_event

    def leave_at(client: ClientId, when: float) -> None:
        async def next_event(until: float) -> Event | None:
            if runtime.clock.now() < when <= until:
                event = await inner(when)
                if event is not None:
                    return event
                runtime.membership.leave(client)
            return await inner(until)

        runtime.next_event = next_event  # type: ignore[method-assign]

    return Harness(runtime, runtime.membership, leave_at)


def twin(config: RunConfig) -> Harness:
    runtime = ScriptedRuntime(
        MANIFEST, 10, script=lambda key: Reply(after_s=1.0 + key.client / 10, duplicate=True),
        models=published(),
    )  # fmt: skip
    return Harness(runtime, runtime.membership, lambda client, when: runtime.leave_at(when, client))


HARNESSES = {"simulation": simulation, "twin": twin}


@pytest.fixture(params=sorted(HARNESSES))
def make(request: pytest.FixtureRequest) -> Callable[[RunConfig], Harness]:
    return HARNESSES[request.param]


def task(client: int, attempt: int = 1) -> TrainTask:
    config = TaskConfig(local_epochs=1, batch_size=10, lr=0.1, ttl_s=1e6)
    return TrainTask(Envelope(), TaskKey(0, client, attempt), REF, config)


async def drain(runtime: Runtime, until: float) -> list[Event]:
    events = []
    for _ in range(1000):
        event = await runtime.next_event(until)
        if event is None:
            return events
        assert runtime.clock.now() <= until
        events.append(event)
    raise AssertionError("next_event never returned None")


def test_each_submitted_task_answers_exactly_once(make: Callable[[RunConfig], Harness]) -> None:
    h = make(twin_config(10))
    for client in (1, 2, 3):
        h.runtime.submit(task(client))
    events = asyncio.run(drain(h.runtime, until=1e5))
    assert sorted(e.key.client for e in events) == [1, 2, 3]


def test_none_once_until_passes_and_never_an_event_past_it(
    make: Callable[[RunConfig], Harness],
) -> None:
    h = make(twin_config(10))
    assert asyncio.run(h.runtime.next_event(until=0.25)) is None
    assert h.runtime.clock.now() == 0.25  # virtual clocks land exactly on until
    h.runtime.submit(task(4))
    assert asyncio.run(h.runtime.next_event(until=0.5)) is None  # nothing due yet
    assert h.runtime.clock.now() == 0.5
    assert asyncio.run(h.runtime.next_event(until=0.1)) is None  # the past: at once
    assert h.runtime.clock.now() == 0.5
    events = asyncio.run(drain(h.runtime, until=1e5))
    assert [e.key for e in events] == [TaskKey(0, 4, 1)]


def test_a_cancelled_task_never_answers_and_cancel_is_idempotent(
    make: Callable[[RunConfig], Harness],
) -> None:
    h = make(twin_config(10))
    h.runtime.submit(task(1))
    h.runtime.submit(task(2))
    h.runtime.cancel(TaskKey(0, 1, 1))
    h.runtime.cancel(TaskKey(0, 1, 1))
    h.runtime.cancel(TaskKey(9, 9, 9))  # never submitted
    events = asyncio.run(drain(h.runtime, until=1e5))
    assert [e.key for e in events] == [TaskKey(0, 2, 1)]


def test_close_is_idempotent_and_bounded(make: Callable[[RunConfig], Harness]) -> None:
    h = make(twin_config(10))
    h.runtime.submit(task(1))

    async def close_twice() -> None:
        await asyncio.wait_for(h.runtime.close(timeout_s=1.0), 5.0)
        await asyncio.wait_for(h.runtime.close(timeout_s=1.0), 5.0)

    asyncio.run(close_twice())


def test_a_member_leaving_mid_task_fails_it_and_is_not_asked_again(
    make: Callable[[RunConfig], Harness],
) -> None:
    config = twin_config(
        10, "selection.clients_per_round=3", "selection.over_selection=1.0",
        "quorum.min_updates=2",
    )  # fmt: skip
    leaver = sample_clients(range(10), 3, seed=config.seed, round_index=0, stream="select")[0]
    h = make(config)
    h.leave_at(leaver, 0.001)
    _, record = one_round(config, h.runtime, h.membership)
    left = [e for e in record["events"] if e["client"] == leaver]
    assert [(e["kind"], e["detail"]) for e in left] == [("crash", "the client left")]
    assert record["committed"] and leaver not in record["accepted"]
    assert record["dispatched"].count(leaver) == 1 and record["replacements"] == 1
    assert not h.membership.is_live(leaver)
