"""Signs of life per client, and who has been silent past the patience.

Every authenticated call counts (a client training a long task still sends heartbeats), and
a client waiting in a long-poll is not silent: its connection is open. A killed client's
connection closes, gRPC cancels the poll, and its silence counts from the poll's start; a
stopped (SIGSTOP) client's poll runs to its end, which counts as a sign of life, so such a
client is found within ``pull_wait_s + patience_s``.
Silence is looked for by a periodic sweep over the live clients (O(live) per sweep, every
``ServeSettings.sweep_s``), so a SIGKILLed client's task fails within ``patience_s +
sweep_s`` of its last call, not at the task's deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from phalanx.engine.clock import Clock
from phalanx.types import ClientId


class Liveness:
    def __init__(self, clock: Clock, patience_s: float) -> None:
        self._clock = clock
        self.patience_s = patience_s
        self._seen: dict[ClientId, float] = {}
        self._polling: dict[ClientId, int] = {}  # long-polls in progress, per client
        self._heard: dict[ClientId, float] = {}  # last sign of life, never forgotten

    def touch(self, client: ClientId) -> None:
        self._seen[client] = self._heard[client] = self._clock.now()

    def age(self, client: ClientId) -> float | None:
        """Seconds since ``client`` was last heard of (None: never)."""
        heard = self._heard.get(client)
        return None if heard is None else self._clock.now() - heard

    @contextmanager
    def polling(self, client: ClientId) -> Iterator[None]:
        """While inside, ``client`` is waiting in a long-poll and not silent."""
        self._polling[client] = self._polling.get(client, 0) + 1
        try:
            yield
        finally:
            left = self._polling.pop(client) - 1
            if left:
                self._polling[client] = left
            self.touch(client)

    def forget(self, client: ClientId) -> None:
        self._seen.pop(client, None)

    def silent(self) -> list[tuple[ClientId, float]]:
        """Clients silent past the patience, with how long; each is forgotten (reported
        once) until it calls again."""
        now = self._clock.now()
        found = [
            (c, now - seen)
            for c, seen in self._seen.items()
            if now - seen > self.patience_s and c not in self._polling
        ]
        for client, _ in found:
            del self._seen[client]
        return found
