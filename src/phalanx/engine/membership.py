"""Who takes part: which clients are registered, which are live now, what each declared.

Membership is separate from the Runtime port (which only moves tasks and replies): over gRPC
clients connect and disconnect at any time, in simulation the population is fixed and live
from the start. The engine drains the changes (``changes``) as rounds open and while they
collect: a joiner enters the health table, a leaver is no longer selected and its in-flight
task fails. Before selecting, a round waits (bounded by ``selection.member_wait_s``) for
enough live members, so a coordinator started before its clients does not discard rounds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from phalanx.types import ClientId


@dataclass(frozen=True, slots=True)
class MemberChange:
    client: ClientId
    joined: bool  # False: the client left


class Membership(Protocol):
    def registered(self) -> Iterable[ClientId]:
        """Every client known now, live or not."""
        ...

    def is_live(self, client: ClientId) -> bool: ...

    def live_count(self) -> int: ...

    def declared_examples(self, client: ClientId) -> int | None:
        """The example count registered for a client, if known: an upper bound on what its
        updates may claim."""
        ...

    def changes(self) -> Sequence[MemberChange]:
        """Joins and leaves since the last call, in the order they happened."""
        ...

    async def wait_for(self, count: int, timeout_s: float) -> None:
        """Return once ``count`` members are live or ``timeout_s`` has passed."""
        ...


class Roster:
    """An in-memory membership: clients join (declaring their example count) and leave.

    ``Roster(range(n), declared=fn)`` is a fixed population, all live, whose declared counts
    come from ``fn`` (the simulation's). Waiting is on the wall clock; a twin on virtual
    time overrides ``wait_for``.
    """

    def __init__(
        self,
        clients: Iterable[ClientId] = (),
        *,
        declared: Callable[[ClientId], int | None] | None = None,
    ) -> None:
        self._known: set[ClientId] = set(clients)
        self._live: set[ClientId] = set(self._known)
        self._declared: dict[ClientId, int] = {}
        self._fallback = declared
        self._changes: list[MemberChange] = []
        self._joined: asyncio.Event | None = None  # made by a waiter, on its event loop

    def registered(self) -> Iterable[ClientId]:
        return self._known

    def is_live(self, client: ClientId) -> bool:
        return client in self._live

    def live_count(self) -> int:
        return len(self._live)

    def declared_examples(self, client: ClientId) -> int | None:
        if client in self._declared:
            return self._declared[client]
        return self._fallback(client) if self._fallback is not None else None

    def join(self, client: ClientId, declared_examples: int | None = None) -> None:
        """A client connects (again); a repeated join of a live client changes nothing."""
        if declared_examples is not None:
            self._declared[client] = declared_examples
        if client in self._live:
            return
        self._known.add(client)
        self._live.add(client)
        self._changes.append(MemberChange(client, joined=True))
        if self._joined is not None:
            self._joined.set()

    def leave(self, client: ClientId) -> None:
        """A client disconnects; leaving twice, or without having joined, changes nothing."""
        if client not in self._live:
            return
        self._live.discard(client)
        self._changes.append(MemberChange(client, joined=False))

    def changes(self) -> Sequence[MemberChange]:
        if not self._changes:
            return ()  # the common case, asked at every event: allocate nothing
        changes, self._changes = self._changes, []
        return changes

    async def wait_for(self, count: int, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        self._joined = joined = asyncio.Event()
        try:
            while len(self._live) < count:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                joined.clear()
                try:
                    await asyncio.wait_for(joined.wait(), remaining)
                except TimeoutError:
                    return
        finally:
            self._joined = None
