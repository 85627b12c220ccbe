"""What the engine needs from a runtime. Runtimes implement this and only move messages.

The port is the transport alone: a clock, tasks out (``submit``, ``cancel``), replies and
observed failures back (``next_event``), and ``close``. Who is registered and live is
``engine.membership``'s; what a simulation injected is the simulation's to report. Every
runtime passes the contract suite in ``tests/contract/test_runtime.py``.
"""

from __future__ import annotations

from typing import Protocol

from phalanx.core.messages import Event, TaskKey, TrainTask
from phalanx.engine.clock import Clock


class Runtime(Protocol):
    @property
    def clock(self) -> Clock: ...

    def submit(self, task: TrainTask) -> None:
        """Send ``task``; its reply or failure comes back through ``next_event``."""
        ...

    def cancel(self, key: TaskKey) -> None:
        """Nothing more is wanted from ``key``: no event for it follows. Idempotent; an
        unknown key is ignored."""
        ...

    async def next_event(self, until: float) -> Event | None:
        """The next reply or observed failure at or before ``until`` on the runtime's clock,
        or None once ``until`` has passed with nothing to report (never early). A late,
        duplicate or unknown-key event may still come: the engine ignores what it no
        longer waits for."""
        ...

    async def close(self, timeout_s: float = 10.0) -> None:
        """Release everything, within ``timeout_s`` (then by force). Idempotent."""
        ...
