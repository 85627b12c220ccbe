"""``ChaosSchedule``: a seeded, replayable list of network faults over time.

The chaos runner draws one schedule per seed, replays it against a proxy while a real run
goes on, and stores it as JSON beside the run: a failing seed is a file that reproduces the
same faults at the same offsets. Besides the proxy's faults a step can be an action: reset
every live connection, refuse new ones, or heal.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from phalanx.config import Strict
from phalanx.errors import ConfigError
from phalanx.faults.chaos.faults import (
    Bandwidth,
    Blackhole,
    Delay,
    Direction,
    Flip,
    ResetAfter,
    Truncate,
)
from phalanx.faults.chaos.proxy import ChaosProxy


class Reset(Strict):
    """Reset every live connection now (RST)."""

    kind: Literal["reset"] = "reset"


class Refuse(Strict):
    """Reset each new connection as soon as it is accepted, until healed."""

    kind: Literal["refuse"] = "refuse"


class Heal(Strict):
    """Every fault off, refusal included: clean forwarding."""

    kind: Literal["heal"] = "heal"


Action = Annotated[
    Blackhole | Delay | Truncate | ResetAfter | Flip | Bandwidth | Reset | Refuse | Heal,
    Field(discriminator="kind"),
]
KINDS = ("blackhole", "delay", "truncate", "reset_after", "flip", "bandwidth", "reset", "refuse")


class Step(Strict):
    """At ``at`` seconds from the start, do ``action`` (to one direction, or both if None)."""

    at: float = Field(ge=0)
    action: Action
    direction: Direction | None = None

    def apply(self, proxy: ChaosProxy) -> None:
        """Carry the step out on ``proxy`` (thread-safe, like every proxy control)."""
        match self.action:
            case Reset():
                proxy.reset()
            case Refuse():
                proxy.refuse()
            case Heal():
                proxy.heal()
            case fault:
                proxy.set_fault(fault, direction=self.direction)


class ChaosSchedule(Strict):
    """Steps in time order; the last one heals, so a run always ends on a clean network."""

    seed: int | None = None
    steps: tuple[Step, ...]

    @classmethod
    def draw(
        cls, seed: int, *, duration: float, steps: int, kinds: tuple[str, ...] = KINDS
    ) -> ChaosSchedule:
        """``steps`` faults of the given ``kinds`` at random times in ``[0, duration)``, then a
        heal at ``duration``; the same seed draws the same schedule."""
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ConfigError(f"unknown chaos kinds {unknown or '(none)'}; valid: {list(KINDS)}")
        rng = random.Random(seed)
        times = sorted(rng.uniform(0.0, duration) for _ in range(steps))
        drawn = [_draw_step(rng, at, rng.choice(kinds)) for at in times]
        return cls(seed=seed, steps=(*drawn, Step(at=duration, action=Heal())))

    @classmethod
    def from_json(cls, text: str) -> ChaosSchedule:
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise ConfigError(f"invalid chaos schedule: {error}") from error

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def replay(
        self, proxy: ChaosProxy, *, stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> int:  # fmt: skip
        """Apply each step at its offset from now, blocking; ``stop`` ends the replay early.
        Returns how many steps were applied."""
        stop = stop or threading.Event()
        start = clock()
        for done, step in enumerate(self.steps):
            if stop.wait(max(0.0, start + step.at - clock())):
                return done
            step.apply(proxy)
        return len(self.steps)

    async def replay_async(self, proxy: ChaosProxy) -> None:
        """``replay`` for code already in an event loop (cancel the task to end it early)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for step in self.steps:
            await asyncio.sleep(max(0.0, start + step.at - loop.time()))
            step.apply(proxy)


def _draw_step(rng: random.Random, at: float, kind: str) -> Step:
    direction = rng.choice([Direction.UP, Direction.DOWN, None])
    return Step(at=at, action=_draw_action(rng, kind), direction=direction)


def _draw_action(rng: random.Random, kind: str) -> Action:
    """Parameters in ranges that hurt without stopping a run for good: tens to hundreds of
    milliseconds of delay, cuts within the first 64 KiB, 1e-5 to 1e-2 of bytes flipped."""
    match kind:
        case "delay":
            return Delay(seconds=rng.uniform(0.01, 0.2), jitter=rng.uniform(0.0, 0.05))
        case "truncate":
            return Truncate(after_bytes=rng.randrange(64 * 1024))
        case "reset_after":
            return ResetAfter(after_bytes=rng.randrange(64 * 1024))
        case "flip":
            rate = math.exp(rng.uniform(math.log(1e-5), math.log(1e-2)))
            return Flip(rate=rate, seed=rng.randrange(2**31))
        case "bandwidth":
            return Bandwidth(bytes_per_second=rng.randrange(64 * 1024, 4 * 1024 * 1024))
        case "blackhole":
            return Blackhole()
        case "reset":
            return Reset()
        case _:
            return Refuse()
