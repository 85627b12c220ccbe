"""Per-client rate limits on the coordinator: calls per second and bytes per second, each a
token bucket, so one client (a bug, or an attacker holding a credential) cannot flood the
coordinator's loop or its network while the others train.

``charge(client, nbytes)`` is called as a request comes in (a push charges the bytes its
header announces, before any arrive) and raises ``BusyError`` when the client is over a
limit; ``BusyError`` is RESOURCE_EXHAUSTED on the wire, a refusal the client may retry later
(its message says when). The size of one upload is ``WireLimits.max_bytes``' business, not
this one's: the byte bucket may go into debt for one large upload, and that client's next
calls wait until the debt is paid back at ``bytes_per_s``.

Memory is bounded: at most ``max_clients`` buckets, least recently charged dropped first.
A dropped bucket had refilled (or nearly) unless more than ``max_clients`` clients were
charged in the time one bucket refills; the bound wins then. The clock is injectable.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from phalanx.errors import BusyError, ConfigError
from phalanx.types import ClientId


@dataclass
class _Buckets:
    calls: float
    bytes: float
    at: float


@dataclass(frozen=True)
class RateLimits:
    """``calls_per_s`` with bursts of ``burst`` calls; ``bytes_per_s`` with bursts of
    ``byte_burst`` bytes (default: one second's worth); 0 turns a limit off."""

    calls_per_s: float
    burst: int
    bytes_per_s: float = 0.0
    byte_burst: int | None = None
    max_clients: int = 100_000

    def __post_init__(self) -> None:
        numbers = (self.calls_per_s, self.burst, self.bytes_per_s, self.byte_burst or 0)
        if not all(math.isfinite(x) and x >= 0 for x in numbers):
            raise ConfigError(f"rate limits must be finite and >= 0; got {self}")
        if self.calls_per_s and self.burst < 1:
            raise ConfigError(f"a call limit needs a burst of at least 1; got {self.burst}")
        if self.max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1; got {self.max_clients}")

    @property
    def byte_capacity(self) -> float:
        return float(self.byte_burst if self.byte_burst is not None else self.bytes_per_s)


class ClientLimiter:
    """Token buckets per client (see the module docstring)."""

    def __init__(
        self,
        calls_per_s: float,
        burst: int,
        bytes_per_s: float = 0.0,
        *,
        byte_burst: int | None = None,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = RateLimits(calls_per_s, burst, bytes_per_s, byte_burst, max_clients)
        self._clock = clock
        self._buckets: OrderedDict[ClientId, _Buckets] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def charge(self, client: ClientId, nbytes: int = 0) -> None:
        """One call of ``nbytes`` by ``client``, or ``BusyError`` saying when to retry (a
        refused call costs nothing)."""
        bucket = self._refilled(client)
        limits = self.limits
        if limits.calls_per_s and bucket.calls < 1.0:
            wait = (1.0 - bucket.calls) / limits.calls_per_s
            raise BusyError(
                f"client {client}: over {limits.calls_per_s:g} calls/s (burst {limits.burst}); "
                f"retry in {wait:.2f} s"
            )
        if limits.bytes_per_s and nbytes > 0 and bucket.bytes <= 0.0:
            wait = (1.0 - bucket.bytes) / limits.bytes_per_s
            raise BusyError(
                f"client {client}: over {limits.bytes_per_s:g} bytes/s; retry in {wait:.2f} s"
            )
        if limits.calls_per_s:
            bucket.calls -= 1.0
        if limits.bytes_per_s:
            bucket.bytes -= max(nbytes, 0)  # may go into debt for one large upload

    def forget(self, client: ClientId) -> None:
        """Drop ``client``'s buckets (it left for good)."""
        self._buckets.pop(client, None)

    def _refilled(self, client: ClientId) -> _Buckets:
        now = self._clock()
        limits = self.limits
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Buckets(float(limits.burst), limits.byte_capacity, now)
            self._buckets[client] = bucket
            while len(self._buckets) > limits.max_clients:
                self._buckets.popitem(last=False)  # the least recently charged
            return bucket
        self._buckets.move_to_end(client)
        elapsed = max(0.0, now - bucket.at)  # an injected clock may step back: no credit
        bucket.calls = min(float(limits.burst), bucket.calls + elapsed * limits.calls_per_s)
        bucket.bytes = min(limits.byte_capacity, bucket.bytes + elapsed * limits.bytes_per_s)
        bucket.at = max(bucket.at, now)
        return bucket
