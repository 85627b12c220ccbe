"""Chaos schedules: drawn from a seed, stored as JSON, checked when read, replayed in time
against a real proxy."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from pydantic import ValidationError
from tests.faults.echo import Echo, connect, echo_in_thread

from phalanx.errors import ConfigError
from phalanx.faults.chaos import (
    Blackhole,
    ChaosProxy,
    ChaosSchedule,
    Delay,
    Direction,
    Heal,
    Refuse,
    Step,
)
from phalanx.faults.chaos.schedule import KINDS


def test_the_same_seed_draws_the_same_schedule() -> None:
    first = ChaosSchedule.draw(7, duration=10.0, steps=30)
    assert first == ChaosSchedule.draw(7, duration=10.0, steps=30)
    assert first != ChaosSchedule.draw(8, duration=10.0, steps=30)


def test_a_drawn_schedule_is_ordered_in_time_and_ends_healed() -> None:
    schedule = ChaosSchedule.draw(3, duration=5.0, steps=200)
    times = [step.at for step in schedule.steps]
    assert times == sorted(times)
    assert times[0] >= 0.0 and times[-2] < 5.0
    assert schedule.steps[-1] == Step(at=5.0, action=Heal())
    assert {step.action.kind for step in schedule.steps[:-1]} == set(KINDS)


def test_a_schedule_draws_only_the_kinds_asked_for() -> None:
    schedule = ChaosSchedule.draw(1, duration=1.0, steps=20, kinds=("delay",))
    assert all(isinstance(step.action, Delay) for step in schedule.steps[:-1])
    with pytest.raises(ConfigError, match="unknown chaos kinds \\['partition'\\]"):
        ChaosSchedule.draw(1, duration=1.0, steps=2, kinds=("delay", "partition"))


def test_json_round_trip_is_exact() -> None:
    schedule = ChaosSchedule.draw(11, duration=3.0, steps=40)
    assert ChaosSchedule.from_json(schedule.to_json()) == schedule


def test_bad_parameters_are_refused_when_read() -> None:
    text = '{"seed": 1, "steps": [{"at": 0, "action": {"kind": "delay", "seconds": -1}}]}'
    with pytest.raises(ConfigError, match="seconds"):
        ChaosSchedule.from_json(text)
    with pytest.raises(ConfigError, match="invalid chaos schedule"):
        ChaosSchedule.from_json('{"steps": [{"at": 0, "action": {"kind": "flood"}}]}')
    with pytest.raises(ValidationError):
        Delay(seconds=0.1, jiter=0.2)  # type: ignore[call-arg]


def test_replay_applies_each_step_at_its_time() -> None:
    schedule = ChaosSchedule(
        steps=(
            Step(at=0.0, action=Refuse()),
            Step(at=0.0, action=Blackhole(), direction=Direction.UP),
            Step(at=0.2, action=Heal()),
        )
    )
    with echo_in_thread() as upstream, ChaosProxy.start_in_thread(upstream=upstream) as proxy:
        started = time.monotonic()
        assert schedule.replay(proxy) == 3
        assert time.monotonic() - started >= 0.2
        with connect(proxy.port) as client:  # healed: neither refused nor blackholed
            client.sendall(b"ok")
            assert client.recv(2) == b"ok"


def test_replay_stops_early_when_asked() -> None:
    schedule = ChaosSchedule(steps=(Step(at=0.0, action=Refuse()), Step(at=60, action=Heal())))
    stop = threading.Event()
    with echo_in_thread() as upstream, ChaosProxy.start_in_thread(upstream=upstream) as proxy:
        timer = threading.Timer(0.1, stop.set)
        timer.start()
        assert schedule.replay(proxy, stop=stop) == 1
        timer.join(5)
        with pytest.raises(ConnectionResetError), connect(proxy.port) as client:
            client.recv(1)
        assert proxy.stats().refused == 1


def test_replay_inside_an_event_loop() -> None:
    # Heal at 1 s, not 0.2 s: the refused connection is tried 0.05 s in, and a loaded
    # machine that stalls this process for 0.15 s could let the heal be applied first.
    schedule = ChaosSchedule(steps=(Step(at=0.0, action=Refuse()), Step(at=1.0, action=Heal())))

    async def echoes(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"hi")
            return await reader.read(2)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()

    async def main() -> None:
        echo = Echo()
        await echo.start()
        async with ChaosProxy(echo.address) as proxy, asyncio.timeout(10):
            replay = asyncio.create_task(schedule.replay_async(proxy))
            await asyncio.sleep(0.05)
            with pytest.raises(ConnectionResetError):
                await echoes(proxy.port)
            await replay
            assert await echoes(proxy.port) == b"hi"
        await echo.stop()

    asyncio.run(main())
