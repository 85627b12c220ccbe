"""Stopping a run on SIGINT/SIGTERM: the first signal abandons the round in flight and ends
the run cleanly; a second one ends it at once.

The first signal cancels the run's asyncio task. The round loop yields to the event loop at
every event it handles, so the cancellation lands within milliseconds; the round in flight
is abandoned (never half-committed: the commit step runs without yielding), and what has
committed stays committed. Blocking work outside the loop (a user's training function in
worker processes) polls ``stop_requested`` and gives up too. A second signal raises
``KeyboardInterrupt`` wherever the process is: every write phalanx makes is atomic or an
fsynced append that resume tolerates torn, so the directory stays consistent.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None


def stop_requested() -> int | None:
    """The signal that asked this process's run to stop, if one has."""
    return _requested


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal after cleaning up; ``result`` holds what committed (set by
    whoever built it) and ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int, result: Any = None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.result = result

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Handlers for SIGINT and SIGTERM while a run is in progress (main thread only;
    elsewhere, or when not installed, signals keep their previous meaning)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced = False  # a second signal came: stop without cleaning up
        self._cancel: Callable[[], None] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        global _requested
        _requested = None
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _requested
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        _requested = None

    def attach(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` on the first signal (at once if one already came)."""
        loop = task.get_loop()

        def cancel() -> None:
            loop.call_soon_threadsafe(task.cancel)

        self._cancel = cancel
        if self.signum is not None:
            cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global _requested
        if self.signum is not None:
            self.forced = True
            raise KeyboardInterrupt  # the second signal: stop now
        self.signum = _requested = signum
        if self._cancel is not None:
            self._cancel()
