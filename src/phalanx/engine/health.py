"""Client health: an exponentially decayed success score. A client whose score falls below
the threshold is sidelined for a cool-down, then put on probation (probed again); success on
probation readmits it, failure sidelines it for twice as long (capped).

The monitor is the policy: pure transitions of one client's health. Which clients are in
which state, round to round, is ``engine.health_index``'s.

Flags (``aggregation.health_feedback``) are judgements, not observed failures, and honest
clients on heterogeneous data draw some. So a flag never shrinks the healthy pool below the
floor (``flag_floor``): the fewest rows the aggregation pipeline needs to tolerate f
(``Pipeline.min_rows``), and at least the round's quorum. A flag that would sideline a
client past the floor still costs it the round's score, but leaves it in the pool; when
several flags compete for the room left, the client whose score falls lowest goes first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import replace
from typing import Protocol

from phalanx.config import HealthConfig, RunConfig
from phalanx.core.state import ClientHealth
from phalanx.types import ClientId, HealthState

HealthTable = dict[ClientId, ClientHealth]


class FlagView(Protocol):
    """What flagging reads of the health index: the live healthy pool, every client's
    health now, and its health as the round opened."""

    @property
    def healthy(self) -> Sized: ...
    @property
    def table(self) -> Mapping[ClientId, ClientHealth]: ...
    def opening(self, client: ClientId) -> ClientHealth: ...


def flag_floor(aggregator: object, config: RunConfig) -> int:
    """The fewest live healthy clients flags may leave: the pipeline's rows for f
    (``min_rows``; 1 for a rule without one), and the round's quorum."""
    min_rows: Callable[[int], int] | None = getattr(aggregator, "min_rows", None)
    rows = min_rows(config.aggregation.f) if callable(min_rows) else 1
    return max(rows, config.quorum.required(config.selection.clients_per_round))


class HealthMonitor:
    def __init__(self, config: HealthConfig) -> None:
        self._config = config

    def new_table(self, clients: Iterable[ClientId]) -> HealthTable:
        return dict.fromkeys(sorted(clients), ClientHealth())  # frozen: one shared value

    def success(self, health: ClientHealth) -> ClientHealth:
        config = self._config
        score = config.decay * health.score + (1 - config.decay)
        if health.state is HealthState.PROBATION:
            return replace(
                health,
                state=HealthState.HEALTHY,
                score=max(score, config.readmit_score),
                successes=health.successes + 1,
            )
        return ClientHealth(  # not dataclasses.replace: this runs once per accepted update
            score, health.state, health.sidelined_until, health.cooldown,
            health.successes + 1, health.failures,
        )  # fmt: skip

    def failure(self, health: ClientHealth, round_index: int) -> ClientHealth:
        config = self._config
        score = config.decay * health.score
        if health.state is HealthState.PROBATION:
            cooldown = min(config.max_cooldown_rounds, max(1, health.cooldown) * 2)
        elif health.state is HealthState.HEALTHY and score < config.sideline_below:
            cooldown = config.cooldown_rounds
        else:
            return ClientHealth(  # not dataclasses.replace: a round has many failures
                score, health.state, health.sidelined_until, health.cooldown,
                health.successes, health.failures + 1,
            )  # fmt: skip
        return ClientHealth(
            score, HealthState.SIDELINED, round_index + 1 + cooldown, cooldown,
            health.successes, health.failures + 1,
        )  # fmt: skip

    def flag(
        self,
        before: ClientHealth,
        after: ClientHealth,
        round_index: int,
        *,
        may_sideline: bool = True,
    ) -> ClientHealth:
        """The aggregator judged the client's accepted update unfit: its round counts as a
        failure after all. ``before`` is its health when the round opened, ``after`` now.
        Without ``may_sideline``, a client healthy now keeps its place in the pool (its
        score still falls)."""
        failed = self.failure(before, round_index)
        flagged = replace(failed, successes=after.successes - 1, failures=after.failures + 1)
        if may_sideline or after.state is not HealthState.HEALTHY:
            return flagged
        return replace(
            flagged,
            state=HealthState.HEALTHY,
            sidelined_until=after.sidelined_until,
            cooldown=after.cooldown,
        )

    def apply_flags(
        self,
        index: FlagView,
        flagged: Iterable[ClientId],
        round_index: int,
        *,
        floor: int,
        set_health: Callable[[ClientId, ClientHealth], None],
    ) -> list[ClientId]:
        """Count each flagged client's round as a failure (``set_health`` writes it back
        into the index), sidelining none past ``floor`` healthy clients; the clients the
        flags sidelined out of the healthy pool, in the order they went."""
        order = sorted(
            flagged, key=lambda c: (self.failure(index.opening(c), round_index).score, c)
        )
        sidelined: list[ClientId] = []
        for client in order:
            after = index.table[client]
            room = len(index.healthy) > floor
            health = self.flag(index.opening(client), after, round_index, may_sideline=room)
            set_health(client, health)
            if after.state is HealthState.HEALTHY and health.state is HealthState.SIDELINED:
                sidelined.append(client)
        return sidelined
