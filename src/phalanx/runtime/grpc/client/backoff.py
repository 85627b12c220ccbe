"""Capped exponential backoff with full jitter, for what may succeed if tried again.

Attempt ``n`` (0, 1, 2, ...) waits a uniform draw from ``[0, min(cap, base * 2**n))``: full
jitter, so clients that lost the same coordinator at the same moment do not come back in
lock step. The draws come from a ``random.Random`` the caller seeds (tests see the exact
schedule), and the sleep and clock are injected, so a test of a long schedule takes no
time. ``deadline_s`` bounds the whole retry, never only one wait: past it the last failure
is raised as a ``TransportError``.

Three kinds of failure are tried again, nothing else: a transport failure
(``TransportError``: the coordinator refused nothing), a ``BusyError`` (over a rate or
in-flight limit: "try later"), and a ``RedirectError`` (this coordinator does not lead, or
answered from a deposed leader's epoch: try the leader). A redirect to an address a
standby named goes at once, up to ``max_hops`` in a row; past that, and for every other
retry, the backoff waits first.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from phalanx.errors import BusyError, RuntimeBackendError

log = logging.getLogger("phalanx.client.backoff")
T = TypeVar("T")


class TransportError(RuntimeBackendError):
    """A call failed in the transport (UNAVAILABLE, DEADLINE_EXCEEDED, a reset connection):
    the coordinator refused nothing, so the call may be tried again."""


class RedirectError(TransportError):
    """Not a transport failure: the call must be made again at another coordinator (a
    standby named the leader, a deposed leader answered) or under a new session (a higher
    epoch was seen). ``at_once``: without a backoff wait (the leader's address is known)."""

    def __init__(self, message: str, *, at_once: bool = False) -> None:
        super().__init__(message)
        self.at_once = at_once


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
    """Run a call until it stops failing in a way worth another try, or ``deadline_s``
    passes; ``max_hops`` redirects in a row go without a wait."""

    backoff: Backoff
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    max_attempts: int = 100_000  # a second bound, for a clock that does not move
    max_hops: int = 3

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        deadline_s: float,
    ) -> T:
        """``fn()``, retried on ``TransportError`` (``RedirectError`` included) and
        ``BusyError`` only; anything else it raises goes straight to the caller (a refusal
        is never retried)."""
        end = self.clock() + deadline_s
        tries = waits = hops = 0
        while True:
            try:
                return fn()
            except (TransportError, BusyError) as exc:
                left = end - self.clock()
                tries += 1
                if left <= 0 or tries >= self.max_attempts:
                    raise TransportError(
                        f"{what}: gave up after {deadline_s:.1f} s: {exc}"
                    ) from None
                if isinstance(exc, RedirectError) and exc.at_once and hops < self.max_hops:
                    hops += 1
                    log.info("%s: %s; trying again at once", what, exc)
                    continue
                wait = self.backoff.delay(waits)
                log.info("%s: %s; retry in %.2f s", what, _kind(exc), wait)
                self.sleep(min(wait, left))
                waits += 1


def _kind(exc: Exception) -> str:
    if isinstance(exc, BusyError):
        return f"the coordinator is busy ({exc})"
    if isinstance(exc, RedirectError):
        return str(exc)
    return f"failed in the transport ({exc})"
