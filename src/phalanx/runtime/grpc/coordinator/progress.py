"""Where the run is, for an operator's ``Status`` call: the round in flight and the rounds
committed and discarded so far (from the last committed state, so a resumed run counts what
it resumed from)."""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.core.state import ServerState
from phalanx.engine.history import RoundRecord


@dataclass
class RunProgress:
    round_in_flight: int | None = None
    committed: int = 0
    failed: int = 0

    def at(self, state: ServerState) -> None:
        """``state`` is the run's last committed state; no round is in flight."""
        self.round_in_flight = None
        self.committed = state.model_version
        self.failed = state.round - state.model_version

    def observe(self, state: ServerState, record: RoundRecord) -> None:
        """A run-lifecycle observer (``RoundHook``): heard after each commit."""
        self.at(state)
