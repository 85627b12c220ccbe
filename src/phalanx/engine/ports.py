"""What the engine needs from a runtime. Runtimes implement this and only move messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from phalanx.core.messages import Event, TaskKey, TrainTask
from phalanx.engine.clock import Clock
from phalanx.types import ClientId


class Runtime(Protocol):
    @property
    def clock(self) -> Clock: ...

    def client_ids(self) -> Sequence[ClientId]: ...

    def declared_examples(self, client: ClientId) -> int | None:
        """The example count the operator registered for a client, if known: an upper bound
        on what its updates may claim."""
        ...

    def submit(self, task: TrainTask) -> None: ...

    def cancel(self, key: TaskKey) -> None: ...

    async def next_event(self, until: float) -> Event | None:
        """The next reply or observed failure at or before ``until`` on the runtime's clock,
        or None once ``until`` has passed with nothing to report."""
        ...

    def fault_log(self, round_index: int) -> list[dict[str, Any]]:
        """Faults injected into ``round_index`` (simulation only; others return [])."""
        ...

    async def close(self) -> None: ...
