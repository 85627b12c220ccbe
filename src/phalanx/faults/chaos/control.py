"""The proxy's shared state: which fault acts where, and what happened.

The pipes read it on every chunk in the event loop's thread while a test thread switches
faults and reads counters, so all of it sits behind one lock held for a few field updates
at a time (never across an await).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from phalanx.faults.chaos.faults import Direction, Fault


@dataclass(frozen=True)
class Traffic:
    """Bytes of one direction: forwarded, dropped (blackholed or cut off) and bits flipped
    (one per damaged byte, so ``flipped`` equals the number of bytes that differ)."""

    forwarded: int = 0
    dropped: int = 0
    flipped: int = 0


@dataclass(frozen=True)
class ProxyStats:
    """A consistent snapshot of the proxy's counters, for assertions."""

    accepted: int
    refused: int
    reset: int
    upstream_failed: int
    live: int
    up: Traffic
    down: Traffic

    def traffic(self, direction: Direction) -> Traffic:
        """The counters of one direction."""
        return self.up if direction is Direction.UP else self.down


class Control:
    """Fault table (per direction, for one connection or for all) plus the counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[tuple[Direction, int | None], Fault] = {}
        self._refusing = False
        self._live: set[int] = set()
        self._events: Counter[str] = Counter()
        self._traffic = {direction: Traffic() for direction in Direction}

    def set(self, fault: Fault, directions: Iterable[Direction], connection: int | None) -> None:
        with self._lock:
            for direction in directions:
                self._faults[direction, connection] = fault

    def heal(self, connection: int | None) -> None:
        """Clear the faults of one connection, or every fault and the refusal when None."""
        with self._lock:
            if connection is None:
                self._faults.clear()
                self._refusing = False
            for direction in Direction:
                self._faults.pop((direction, connection), None)

    def refuse(self, on: bool) -> None:
        with self._lock:
            self._refusing = on

    def fault_for(self, direction: Direction, connection: int) -> Fault | None:
        """The fault acting on this connection: its own if it has one, else the proxy's."""
        with self._lock:
            own = self._faults.get((direction, connection))
            return own if own is not None else self._faults.get((direction, None))

    def admit(self, connection: int) -> bool:
        """Count an accepted connection; False (counted as refused) while refusing."""
        with self._lock:
            self._events["refused" if self._refusing else "accepted"] += 1
            if not self._refusing:
                self._live.add(connection)
            return not self._refusing

    def closed(self, connection: int) -> None:
        with self._lock:
            self._live.discard(connection)

    def event(self, name: str, n: int = 1) -> None:
        """Count a connection event: ``reset`` or ``upstream_failed``."""
        with self._lock:
            self._events[name] += n

    def count(
        self, direction: Direction, *, forwarded: int = 0, dropped: int = 0, flipped: int = 0
    ) -> None:
        with self._lock:
            old = self._traffic[direction]
            self._traffic[direction] = replace(
                old,
                forwarded=old.forwarded + forwarded,
                dropped=old.dropped + dropped,
                flipped=old.flipped + flipped,
            )

    def live(self) -> list[int]:
        with self._lock:
            return sorted(self._live)

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                accepted=self._events["accepted"],
                refused=self._events["refused"],
                reset=self._events["reset"],
                upstream_failed=self._events["upstream_failed"],
                live=len(self._live),
                up=self._traffic[Direction.UP],
                down=self._traffic[Direction.DOWN],
            )
