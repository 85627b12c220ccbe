"""A stop signal during the coordinator's farewell (every round committed, clients given a
moment to leave) ends the run as finished, not with a CancelledError traceback; a
cancellation that no signal asked for still propagates."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace
from typing import Any, cast

import pytest

from phalanx.coordinator import StopSignals
from phalanx.runtime.grpc.coordinator.deployment import Deployment


def lingering_runtime() -> Any:
    """A runtime whose one client never leaves: the farewell waits its whole bound."""
    return SimpleNamespace(
        board=SimpleNamespace(finish=lambda: None),
        membership=SimpleNamespace(live_count=lambda: 1),
    )


async def farewell_cancelled(signum: int | None) -> None:
    signals = cast(StopSignals, SimpleNamespace(signum=signum))
    task = asyncio.create_task(Deployment._farewell_unless_stopped(lingering_runtime(), signals))
    await asyncio.sleep(0.1)
    task.cancel()  # what StopSignals does on SIGTERM
    await asyncio.wait_for(task, 5.0)


def test_a_stop_signal_during_the_farewell_ends_it_cleanly() -> None:
    asyncio.run(farewell_cancelled(signal.SIGTERM))


def test_a_cancellation_without_a_signal_still_propagates() -> None:
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(farewell_cancelled(None))
