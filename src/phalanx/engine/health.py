"""Client health: an exponentially decayed success score. A client whose score falls below
the threshold is sidelined for a cool-down, then put on probation (probed again); success on
probation readmits it, failure sidelines it for twice as long (capped).

The monitor is the policy: pure transitions of one client's health. Which clients are in
which state, round to round, is ``engine.health_index``'s."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from phalanx.config import HealthConfig
from phalanx.core.state import ClientHealth
from phalanx.types import ClientId, HealthState

HealthTable = dict[ClientId, ClientHealth]


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

    def flag(self, before: ClientHealth, after: ClientHealth, round_index: int) -> ClientHealth:
        """The aggregator judged the client's accepted update unfit: its round counts as a
        failure after all. ``before`` is its health when the round opened, ``after`` now."""
        failed = self.failure(before, round_index)
        return replace(failed, successes=after.successes - 1, failures=after.failures + 1)
