"""The Runtime contract: what every runtime must do, run against each implementation.

A runtime only moves messages, but the engine relies on how it moves them: at most one
event per submitted key (a client's duplicate is absorbed), none for a cancelled or never
submitted key, no event after ``until`` and None only once ``until`` has passed, cancel and
close idempotent; and when a member leaves mid-task, the engine sees that task fail and
asks someone else. Add a runtime by adding a harness to ``HARNESSES``: each test runs on
one event loop that made the harness (a gRPC server lives on its loop), with times taken
relative to the runtime's clock when the test starts (the gRPC runtime's is the wall clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
import torch

from phalanx.config import RunConfig
from phalanx.core.messages import Envelope, Event, TaskConfig, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.engine.engine import Engine
from phalanx.engine.membership import Membership
from phalanx.engine.ports import Runtime
from phalanx.engine.selection import sample_clients
from phalanx.runtime.grpc.coordinator import ServeSettings
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.runtime.inprocess.trainers import TrainJob, TrainOutcome
from phalanx.testing import Reply, ScriptedRuntime
from phalanx.types import ClientId
from tests.grpc_clients import Answer, Script, ScriptedClient, serve_locally
from tests.twin import MANIFEST, twin_config

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
    horizon_s: float = 1e5  # a drain waits this long on the runtime's clock for stragglers
    virtual: bool = True  # the clock lands exactly on ``until``
    stop: Callable[[], Awaitable[None]] | None = None


async def simulation(config: RunConfig) -> Harness:
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


async def twin(config: RunConfig) -> Harness:
    runtime = ScriptedRuntime(
        MANIFEST, 10, script=lambda key: Reply(after_s=1.0 + key.client / 10, duplicate=True),
        models=published(),
    )  # fmt: skip
    return Harness(runtime, runtime.membership, lambda client, when: runtime.leave_at(when, client))


async def grpc(config: RunConfig) -> Harness:
    """Ten scripted clients on real gRPC over loopback, each answering twice (the second
    push is refused as a duplicate), 0.3 s + client / 50 after it took the task."""
    settings = ServeSettings(heartbeat_s=0.1, patience_s=2.0, pull_wait_s=0.5)
    local = await serve_locally(published(), settings, range(10))
    script: Script = lambda key: Answer(after_s=0.3 + key.client / 50, duplicate=True)  # noqa: E731
    clients = {c: ScriptedClient(local.target, c, script=script) for c in range(10)}
    await asyncio.gather(*(c.join() for c in clients.values()))
    for client in clients.values():
        client.start()
    runtime = local.runtime

    def leave_at(client: ClientId, when: float) -> None:
        async def leave() -> None:
            await asyncio.sleep(max(0.0, when - runtime.clock.now()))
            await clients[client].stop(leave=True)

        asyncio.get_running_loop().create_task(leave())

    async def stop() -> None:
        await runtime.close(timeout_s=2.0)
        await asyncio.gather(*(c.stop() for c in clients.values()))

    return Harness(runtime, runtime.membership, leave_at, 2.0, False, stop)


HARNESSES = {"simulation": simulation, "twin": twin, "grpc": grpc}
Make = Callable[[RunConfig], Awaitable[Harness]]


@pytest.fixture(params=sorted(HARNESSES))
def make(request: pytest.FixtureRequest) -> Make:
    return HARNESSES[request.param]


def within(make: Make, config: RunConfig, body: Callable[[Harness], Awaitable[None]]) -> None:
    """Run ``body`` on one event loop with a harness made on it (a gRPC server and its
    clients live on the loop that made them), stopping the harness afterwards."""

    async def main() -> None:
        harness = await make(config)
        try:
            await body(harness)
        finally:
            if harness.stop is not None:
                await harness.stop()

    asyncio.run(main())


def task(client: int, attempt: int = 1) -> TrainTask:
    config = TaskConfig(local_epochs=1, batch_size=10, lr=0.1, ttl_s=1e6)
    return TrainTask(Envelope(), TaskKey(0, client, attempt), REF, config)


async def drain(h: Harness) -> list[Event]:
    """Every event until the harness's horizon from now."""
    until = h.runtime.clock.now() + h.horizon_s
    events = []
    for _ in range(1000):
        event = await h.runtime.next_event(until)
        if event is None:
            assert h.runtime.clock.now() >= until
            return events
        assert h.runtime.clock.now() <= until
        events.append(event)
    raise AssertionError("next_event never returned None")


def test_each_submitted_task_answers_exactly_once(make: Make) -> None:
    async def body(h: Harness) -> None:
        for client in (1, 2, 3):
            h.runtime.submit(task(client))
        h.runtime.submit(task(3))  # submissions are idempotent by key
        events = await drain(h)
        assert sorted(e.key.client for e in events) == [1, 2, 3]

    within(make, twin_config(10), body)


def test_none_once_until_passes_and_never_an_event_past_it(make: Make) -> None:
    async def body(h: Harness) -> None:
        clock = h.runtime.clock
        start = clock.now()
        assert await h.runtime.next_event(until=start + 0.25) is None
        landed(h, start + 0.25)
        h.runtime.submit(task(4))
        assert await h.runtime.next_event(until=start + 0.5) is None  # nothing due yet
        landed(h, start + 0.5)
        before = clock.now()
        assert await h.runtime.next_event(until=start + 0.1) is None  # the past: at once
        assert clock.now() - before < 0.05
        events = await drain(h)
        assert [e.key for e in events] == [TaskKey(0, 4, 1)]

    within(make, twin_config(10), body)


def landed(h: Harness, until: float) -> None:
    """Virtual clocks land exactly on ``until``; the wall clock just past it."""
    now = h.runtime.clock.now()
    assert now == until if h.virtual else until <= now < until + 0.1


def test_a_cancelled_task_never_answers_and_cancel_is_idempotent(make: Make) -> None:
    async def body(h: Harness) -> None:
        h.runtime.submit(task(1))
        h.runtime.submit(task(2))
        h.runtime.cancel(TaskKey(0, 1, 1))
        h.runtime.cancel(TaskKey(0, 1, 1))
        h.runtime.cancel(TaskKey(9, 9, 9))  # never submitted
        events = await drain(h)
        assert [e.key for e in events] == [TaskKey(0, 2, 1)]

    within(make, twin_config(10), body)


def test_close_is_idempotent_and_bounded(make: Make) -> None:
    async def body(h: Harness) -> None:
        h.runtime.submit(task(1))
        await asyncio.wait_for(h.runtime.close(timeout_s=1.0), 5.0)
        await asyncio.wait_for(h.runtime.close(timeout_s=1.0), 5.0)

    within(make, twin_config(10), body)


def test_a_member_leaving_mid_task_fails_it_and_is_not_asked_again(make: Make) -> None:
    config = twin_config(
        10, "selection.clients_per_round=3", "selection.over_selection=1.0",
        "quorum.min_updates=2",
    )  # fmt: skip
    leaver = sample_clients(range(10), 3, seed=config.seed, round_index=0, stream="select")[0]

    async def body(h: Harness) -> None:
        h.leave_at(leaver, h.runtime.clock.now() + 0.05)
        engine = Engine(config, h.runtime, membership=h.membership, models=h.runtime.models)  # type: ignore[attr-defined]
        try:
            state = engine.initial_state(torch.zeros(MANIFEST.dim), MANIFEST)
            _, round_record = await engine.run_round(state)
        finally:
            engine.close()
        record = round_record.to_json()
        left = [e for e in record["events"] if e["client"] == leaver]
        assert [(e["kind"], e["detail"]) for e in left] == [("crash", "the client left")]
        assert record["committed"] and leaver not in record["accepted"]
        assert record["dispatched"].count(leaver) == 1 and record["replacements"] == 1
        assert not h.membership.is_live(leaver)

    within(make, config, body)
