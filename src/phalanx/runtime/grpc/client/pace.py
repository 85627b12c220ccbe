"""How fast this client really works, measured, for the partial-work decision.

``client.partial.steps_to_do`` asks a ``Pace`` how long a number of steps takes; a simulated
client models it, a real one measures it: seconds per local step from the tasks it has
trained (the latest measurement weighs half), and the seconds its last push took. Before
the first measurement the pace is unknown and every step is planned (the time-to-live guard
then stops an attempt that runs over). A straggler's pace is this one slowed by its factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class MeasuredPace:
    step_s: float | None = None  # None: nothing measured yet
    upload_s: float = 0.0
    slowdown: float = 1.0  # a straggling attempt's factor (1: none)

    def duration(self, steps: int) -> float:
        if self.step_s is None:
            return 0.0
        return steps * self.step_s * self.slowdown + self.upload_s

    def steps_within(self, budget: float) -> int:
        if self.step_s is None or self.step_s <= 0:
            return 0
        room = budget - self.upload_s
        return max(0, int(room // (self.step_s * self.slowdown)))

    def slowed(self, factor: float) -> MeasuredPace:
        return MeasuredPace(self.step_s, self.upload_s, factor)

    def trained(self, steps: int, seconds: float) -> None:
        """Note a finished training of ``steps`` steps (at this client's own speed)."""
        if steps <= 0:
            return
        measured = seconds / steps
        self.step_s = measured if self.step_s is None else 0.5 * (self.step_s + measured)

    def pushed(self, seconds: float) -> None:
        self.upload_s = seconds


@dataclass
class TaskTimer:
    """A task's time-to-live, counted from when it arrived on this client's clock (never
    the coordinator's)."""

    ttl_s: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.ttl_s - self.elapsed()
