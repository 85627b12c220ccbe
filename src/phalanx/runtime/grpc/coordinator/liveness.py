"""Signs of life per client, and who has been silent past the patience.

Every authenticated call counts (a client training a long task still sends heartbeats).
Silence is looked for by a periodic sweep over the live clients (O(live) per sweep, every
``ServeSettings.sweep_s``), so a SIGKILLed client's task fails within ``patience_s +
sweep_s`` of its last call, not at the task's deadline.
"""

from __future__ import annotations

from phalanx.engine.clock import Clock
from phalanx.types import ClientId


class Liveness:
    def __init__(self, clock: Clock, patience_s: float) -> None:
        self._clock = clock
        self.patience_s = patience_s
        self._seen: dict[ClientId, float] = {}

    def touch(self, client: ClientId) -> None:
        self._seen[client] = self._clock.now()

    def forget(self, client: ClientId) -> None:
        self._seen.pop(client, None)

    def silent(self) -> list[tuple[ClientId, float]]:
        """Clients silent past the patience, with how long; each is forgotten (reported
        once) until it calls again."""
        now = self._clock.now()
        found = [(c, now - seen) for c, seen in self._seen.items() if now - seen > self.patience_s]
        for client, _ in found:
            del self._seen[client]
        return found
