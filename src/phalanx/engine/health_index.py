"""The health table, indexed so that a round touches only the clients it involves.

``ServerState.health`` (client -> ClientHealth) is the persisted form; the index is built
from it once (on start or resume) and then kept current one change at a time: the live
healthy and live probation clients as sorted sets (selection draws by rank, no sort of the
population), and a heap on the end of each cool-down, so opening a round looks only at
clients whose cool-down ends then. Its cost per round is linear in the round's clients and
logarithmic in the registered population.

The index copies the table it is built from, then updates its copy in place and hands that
same dict to each next ServerState: a state's health belongs to the engine that produced it.
Running a round from an older state whose table has since moved on would silently mix two
histories, so it is refused (``StaleStateError``); a state read from a checkpoint, or made by
``initial_state``, is indexed afresh.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import replace

from sortedcontainers import SortedList

from phalanx.core.state import ClientHealth
from phalanx.engine.health import HealthTable
from phalanx.engine.membership import MemberChange
from phalanx.errors import StaleStateError
from phalanx.types import ClientId, HealthState


class IndexedTable(dict[ClientId, ClientHealth]):
    """A health table an index keeps current, marked with the round it is current for: a
    state carrying it from an older round is recognised, whichever engine made it."""

    current_round: int


class HealthIndex:
    def __init__(
        self, table: HealthTable, round_index: int, is_live: Callable[[ClientId], bool]
    ) -> None:
        self.table = IndexedTable(table)  # a copy: the caller's table is never changed
        self.table.current_round = round_index
        self._is_live = is_live
        live = [(c, h.state) for c, h in table.items() if is_live(c)]
        self.healthy = SortedList(c for c, state in live if state is HealthState.HEALTHY)
        self.probation = SortedList(c for c, state in live if state is HealthState.PROBATION)
        self._wakeups = [  # (sidelined_until, client): a heap
            (h.sidelined_until, c) for c, h in table.items() if h.state is HealthState.SIDELINED
        ]
        heapq.heapify(self._wakeups)
        self._opening: dict[ClientId, ClientHealth] = {}

    @property
    def round(self) -> int:
        """The next round this index's table is current for."""
        return self.table.current_round

    def current_for(self, table: HealthTable, round_index: int) -> bool:
        """Whether this index already describes ``table`` at ``round_index``; raises if
        ``table`` is an indexed table that has moved on since (any index's)."""
        if isinstance(table, IndexedTable) and table.current_round != round_index:
            raise StaleStateError(
                f"round {round_index} started from a state whose health table has moved on "
                f"to round {table.current_round}: run rounds from the state the last round "
                "returned"
            )
        return table is self.table

    def open_round(self, round_index: int) -> None:
        """Sidelined clients whose cool-down has ended move to probation.

        The round opens *after* those moves: ``opening`` must give a woken client as on
        probation, not as sidelined. A flag judges a client against its opening health
        (``HealthMonitor.flag``); taken from before the wake-up, a probe that drew a flag
        counted as one more failure while sidelined, which keeps the cool-down that had
        just ended, so the client was woken and probed again the next round, and the next:
        a Byzantine client flagged on every probe took part in every round."""
        self.table.current_round = round_index
        while self._wakeups and self._wakeups[0][0] <= round_index:
            until, client = heapq.heappop(self._wakeups)
            health = self.table.get(client)
            if health is None or health.state is not HealthState.SIDELINED:
                continue  # stale: readmitted or removed since
            if health.sidelined_until != until:
                continue  # stale: sidelined again, a later entry stands
            self.set(client, replace(health, state=HealthState.PROBATION))
        self._opening = {}

    def close_round(self) -> None:
        self.table.current_round += 1

    def set(self, client: ClientId, health: ClientHealth) -> bool:
        """Record a client's new health, keeping the sets and the heap in step; True if its
        state changed."""
        before = self.table[client]
        self._opening.setdefault(client, before)
        self.table[client] = health
        if before.state is health.state and before.sidelined_until == health.sidelined_until:
            return False  # same sets, same wake-up: the common case of a success
        self._leave_sets(client, before)
        self._enter(client, health)
        return True

    def opening(self, client: ClientId) -> ClientHealth:
        """A client's health as the round opened."""
        return self._opening.get(client, self.table[client])

    def is_healthy(self, client: ClientId) -> bool:
        return client in self.healthy

    def join(self, client: ClientId) -> None:
        """A client that is new gets a fresh record; a returning one keeps its own (a
        reconnect must not wash out a poor score). Either becomes selectable if fit."""
        health = self.table.setdefault(client, ClientHealth())
        self._leave_sets(client, health)
        self._enter(client, health)

    def leave(self, client: ClientId) -> None:
        """A client that left is not selected; its record stays for when it returns."""
        health = self.table.get(client)
        if health is not None:
            self._leave_sets(client, health)

    def add_missing(self, clients: Iterable[ClientId]) -> None:
        """Fresh records for registered clients the table does not know yet."""
        for client in clients:
            if client not in self.table:
                self.join(client)

    def apply(self, changes: Iterable[MemberChange]) -> list[ClientId]:
        """Joins and leaves in order; returns the clients that left (and are still gone)."""
        left: dict[ClientId, None] = {}
        for change in changes:
            if change.joined:
                self.join(change.client)
                left.pop(change.client, None)
            else:
                self.leave(change.client)
                left[change.client] = None
        return list(left)

    def _enter(self, client: ClientId, health: ClientHealth) -> None:
        if health.state is HealthState.SIDELINED:
            heapq.heappush(self._wakeups, (health.sidelined_until, client))
        elif self._is_live(client):
            target = self.healthy if health.state is HealthState.HEALTHY else self.probation
            if client not in target:
                target.add(client)

    def _leave_sets(self, client: ClientId, health: ClientHealth) -> None:
        if health.state is HealthState.HEALTHY:
            self.healthy.discard(client)
        elif health.state is HealthState.PROBATION:
            self.probation.discard(client)
