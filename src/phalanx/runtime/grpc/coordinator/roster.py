"""The served membership: the engine's ``Roster`` whose wait for members says what it is
doing in log lines (how many it waits for, how long at most, progress, and how it ended),
since a coordinator started before its clients otherwise looks hung; and a listener told
the live count at every change (the coordinator's ``members_live`` gauge)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from phalanx.engine.membership import Roster
from phalanx.types import ClientId

log = logging.getLogger("phalanx.runtime.grpc.coordinator")
REPORT_EVERY_S = 5.0


class ServedRoster(Roster):
    def __init__(self, on_live: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.on_live = on_live  # told the live count after every join and leave (metrics)

    def join(self, client: ClientId, declared_examples: int | None = None) -> None:
        super().join(client, declared_examples)
        if self.on_live is not None:
            self.on_live(self.live_count())

    def leave(self, client: ClientId) -> None:
        super().leave(client)
        if self.on_live is not None:
            self.on_live(self.live_count())

    async def wait_for(self, count: int, timeout_s: float) -> None:
        if self.live_count() >= count:
            return
        start = time.monotonic()
        log.warning(
            "waiting up to %.1f s for %d live members (%d live now)",
            timeout_s, count, self.live_count(),
        )  # fmt: skip
        end = start + timeout_s
        for _ in range(int(timeout_s / REPORT_EVERY_S) + 2):
            remaining = end - time.monotonic()
            if self.live_count() >= count or remaining <= 0:
                break
            await super().wait_for(count, min(remaining, REPORT_EVERY_S))
            if self.live_count() < count and time.monotonic() < end:
                log.info(
                    "still waiting: %d of %d members live, %.0f s left",
                    self.live_count(), count, end - time.monotonic(),
                )  # fmt: skip
        waited = time.monotonic() - start
        if self.live_count() >= count:
            log.warning("%d members live after %.1f s: the round opens", self.live_count(), waited)
        else:
            log.warning(
                "gave up waiting after %.1f s with %d of %d members live: the round opens "
                "short and may be discarded",
                waited, self.live_count(), count,
            )  # fmt: skip
