"""How a coordinator treats its clients over gRPC: heartbeat cadence and patience, the
long-poll's wait, uploads in flight, and the wire's size limits.

These are deployment settings, not part of a run's trajectory: a run resumed behind another
patience or upload limit computes the same rounds, so they are command-line options of
``phalanx serve`` and not keys of the scenario's ``RunConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phalanx.errors import ConfigError
from phalanx.runtime.grpc.assembly import WireLimits


@dataclass(frozen=True)
class ServeSettings:
    """``heartbeat_s``: how often a client is told to send a heartbeat. ``patience_s``: the
    silence after which a client counts as gone and its task fails at once (instead of at
    the task's deadline); any authenticated call counts as a sign of life. ``pull_wait_s``:
    the longest a ``PullTask`` long-poll waits before answering ``NONE_YET``.
    ``max_uploads``: updates held at once, from the first chunk until the engine takes them
    (beyond it a push is refused with ``BusyError``), so memory stays O(model x uploads)."""

    heartbeat_s: float = 1.0
    patience_s: float = 3.0
    pull_wait_s: float = 5.0
    max_uploads: int = 8
    limits: WireLimits = field(default_factory=WireLimits)

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0 or self.pull_wait_s <= 0:
            raise ConfigError(
                f"heartbeat and pull wait must be positive; got {self.heartbeat_s} s and "
                f"{self.pull_wait_s} s"
            )
        if self.patience_s <= self.heartbeat_s:
            raise ConfigError(
                f"the heartbeat patience ({self.patience_s} s) must exceed the heartbeat "
                f"interval ({self.heartbeat_s} s), or every client counts as silent"
            )
        if self.max_uploads < 1:
            raise ConfigError(f"max_uploads must be at least 1; got {self.max_uploads}")

    @property
    def sweep_s(self) -> float:
        """How often silence is looked for: a silent client is found within
        ``patience_s + sweep_s``."""
        return min(self.patience_s / 5, 0.5)
