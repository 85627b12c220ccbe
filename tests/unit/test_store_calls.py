"""Store calls with a timeout: a late call is tracked until it ends, and what must wait for
it (giving the store back) runs only then."""

from __future__ import annotations

import asyncio
import threading

import pytest

from phalanx.coordinator.store_calls import StoreCalls
from phalanx.errors import StorageError


def test_a_call_past_its_timeout_is_a_storage_error_and_stays_tracked() -> None:
    calls, go, released = StoreCalls(0.1), threading.Event(), []

    async def main() -> None:
        assert await calls.run(lambda: 5, what="quick") == 5
        with pytest.raises(StorageError, match=r"save of round 3 did not finish within 0\.1 s"):
            await calls.run(lambda: go.wait(10), what="save of round 3")

    asyncio.run(main())
    assert calls.busy() and not calls.drain(0.05)
    calls.when_idle(lambda: released.append(True))
    assert released == []  # not while the late call runs
    go.set()
    assert calls.drain(5) and not calls.busy()
    assert released == [True]
    calls.when_idle(lambda: released.append(False))  # idle now: at once
    assert released == [True, False]


def test_a_blocking_call_is_bounded_too_and_passes_errors_on() -> None:
    calls, go = StoreCalls(0.1), threading.Event()
    assert calls.run_now(lambda: "found", what="lookup") == "found"
    with pytest.raises(StorageError, match="lookup did not finish"):
        calls.run_now(lambda: go.wait(10), what="lookup")

    def broken() -> None:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        calls.run_now(broken, what="lookup")
    go.set()
    assert calls.drain(5)
