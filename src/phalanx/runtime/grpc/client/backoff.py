"""Capped exponential backoff with full jitter, for transport failures only.

Attempt ``n`` (0, 1, 2, ...) waits a uniform draw from ``[0, min(cap, base * 2**n))``: full
jitter, so clients that lost the same coordinator at the same moment do not come back in
lock step. The draws come from a ``random.Random`` the caller seeds (tests see the exact
schedule), and the sleep and clock are injected, so a test of a long schedule takes no
time. ``deadline_s`` bounds the whole retry, never only one wait: past it the last transport
failure is raised.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from phalanx.errors import RuntimeBackendError

log = logging.getLogger("phalanx.client.backoff")
T = TypeVar("T")


class TransportError(RuntimeBackendError):
    """A call failed in the transport (UNAVAILABLE, DEADLINE_EXCEEDED, a reset connection):
    the coordinator refused nothing, so the call may be tried again."""


@dataclass
class Backoff:
    """The delay before each retry: ``base_s * 2**attempt`` capped at ``cap_s``, fully
    jittered."""

    base_s: float = 0.2
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s; got {self.base_s}, {self.cap_s}")

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 64))
        return self.rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class Retrying:
    """Run a call until it stops failing in the transport, or ``deadline_s`` passes."""

    backoff: Backoff
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    max_attempts: int = 100_000  # a second bound, for a clock that does not move

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        deadline_s: float,
    ) -> T:
        """``fn()``, retried on ``TransportError`` only; anything else it raises goes
        straight to the caller (a refusal is never retried)."""
        end = self.clock() + deadline_s
        attempt = 0
        while True:
            try:
                return fn()
            except TransportError as exc:
                wait = self.backoff.delay(attempt)
                left = end - self.clock()
                if left <= 0 or attempt + 1 >= self.max_attempts:
                    raise TransportError(
                        f"{what}: gave up after {deadline_s:.1f} s: {exc}"
                    ) from None
                log.info("%s failed in the transport (%s); retry in %.2f s", what, exc, wait)
                self.sleep(min(wait, left))
                attempt += 1
