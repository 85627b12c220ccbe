"""What the chaos proxy can do to a byte stream, as data.

Each fault is a frozen, strict model with a ``kind`` tag, so a schedule of faults is plain
JSON and a typo in a parameter fails when the schedule is read, not halfway through a chaos
run. One fault at a time acts on a direction of a connection; ``Direction`` names the two
directions from the client's point of view (``up``: client to upstream).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from phalanx.config import Strict


class Direction(StrEnum):
    """Which way bytes travel: ``up`` from the client to the upstream, ``down`` back."""

    UP = "up"
    DOWN = "down"


BOTH = (Direction.UP, Direction.DOWN)


class Blackhole(Strict):
    """Read and drop every byte: the connection stays open and the sender is never blocked,
    as behind a dead route, so only a deadline or a heartbeat notices."""

    kind: Literal["blackhole"] = "blackhole"


class Delay(Strict):
    """Hold each chunk ``seconds`` plus up to ``jitter`` after it arrived; order is kept
    (a later chunk never overtakes an earlier one), throughput is not cut."""

    kind: Literal["delay"] = "delay"
    seconds: float = Field(ge=0)
    jitter: float = Field(default=0.0, ge=0)


class Truncate(Strict):
    """Forward the first ``after_bytes`` of the connection in this direction, then close the
    connection cleanly (FIN): the reader sees a short stream and a normal end of file."""

    kind: Literal["truncate"] = "truncate"
    after_bytes: int = Field(ge=0)


class ResetAfter(Strict):
    """Forward the first ``after_bytes`` in this direction, then reset the connection (RST)."""

    kind: Literal["reset_after"] = "reset_after"
    after_bytes: int = Field(ge=0)


class Flip(Strict):
    """Flip one random bit in each byte with probability ``rate``, from an RNG seeded by
    (``seed``, connection, direction), so a failing chaos run can be replayed."""

    kind: Literal["flip"] = "flip"
    rate: float = Field(gt=0, le=1)
    seed: int = 0


class Bandwidth(Strict):
    """Pace forwarding to ``bytes_per_second``; the bounded buffer pushes back on the sender."""

    kind: Literal["bandwidth"] = "bandwidth"
    bytes_per_second: int = Field(gt=0)


Fault = Annotated[
    Blackhole | Delay | Truncate | ResetAfter | Flip | Bandwidth, Field(discriminator="kind")
]
