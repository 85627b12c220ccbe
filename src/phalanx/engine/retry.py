"""Retry of transient failures: exponential backoff with full jitter, capped attempts, and
never past the round deadline. The jitter is drawn from (seed, round, client, attempt), so a
resumed run waits exactly as long as an uninterrupted one."""

from __future__ import annotations

from phalanx.config import RetryConfig
from phalanx.core.rng import uniforms
from phalanx.types import ClientId, FailureKind


class RetryPolicy:
    def __init__(self, config: RetryConfig, *, seed: int) -> None:
        self._config = config
        self._seed = seed

    def backoff(self, round_index: int, client: ClientId, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))]."""
        cap = min(self._config.max_delay_s, self._config.base_delay_s * 2.0 ** (attempt - 1))
        return float(cap) * uniforms(self._seed, "retry", round_index, client, attempt)[0]

    def next_attempt_at(
        self,
        kind: FailureKind,
        *,
        round_index: int,
        client: ClientId,
        attempt: int,
        now: float,
        round_deadline: float,
    ) -> float | None:
        """When to try again after ``attempt`` failed with ``kind``, or None for never."""
        if kind not in self._config.retry_on or attempt >= self._config.max_attempts:
            return None
        when = now + self.backoff(round_index, client, attempt)
        return when if when < round_deadline else None
