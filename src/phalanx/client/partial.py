"""The partial-work decision: how many local steps a client takes on a task.

A client knows its own pace (seconds per step, and what its transfers cost) and the task's
time-to-live; the coordinator's clock never enters. With partial work off, or when the whole
task fits, the client plans every step. Otherwise it does what fits in the time-to-live, if
that is at least the policy's minimum share; below it a partial update is not worth sending,
so the client tries the whole task anyway (and the coordinator's deadline may cut it off).
"""

from __future__ import annotations

import math
from typing import Protocol

from phalanx.core.messages import PartialWork


class Pace(Protocol):
    """How long work takes on this client: measured by a real one, modelled in simulation
    (``runtime.inprocess.latency.TaskTiming``)."""

    def duration(self, steps: int) -> float:
        """Seconds from receiving the task to the reply arriving, for ``steps`` steps."""
        ...

    def steps_within(self, budget: float) -> int:
        """Steps that fit in ``budget`` seconds, transfers included."""
        ...


def steps_to_do(total: int, ttl_s: float, pace: Pace, policy: PartialWork) -> int:
    """Local steps to take out of ``total`` planned, given ``ttl_s`` seconds to reply."""
    if not policy.enabled or pace.duration(total) <= ttl_s:
        return total
    fits = pace.steps_within(ttl_s)
    return fits if fits >= math.ceil(policy.min_fraction * total) else total
