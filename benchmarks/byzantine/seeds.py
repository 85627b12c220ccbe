"""The seeds a Byzantine report is drawn on: never the seeds the default was tuned on.

A default chosen on some seeds looks better on those seeds than it is; issue 13 asks that
the figures come from seeds drawn at report time. ``draw_seeds`` takes them from the
operating system's randomness (``secrets``), redrawing any of ``TUNING_SEEDS``; seeds given
on the command line (to reproduce a report) are accepted only when none of them was tuned
on, unless the caller allows it explicitly, and the report says which it was.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.byzantine.tuning import TUNING_SEEDS
from phalanx.errors import ConfigError

SEED_RANGE = 2**31  # numpy and torch take any seed below this
_MAX_DRAWS = 1000  # bounded: with 2 of 2^31 values forbidden, a redraw is rare

DRAWN = "drawn at run time"
GIVEN = "given (--seeds)"
GIVEN_TUNING = "given (--seeds), TUNING SEEDS ALLOWED (--allow-tuning-seeds): not held out"


@dataclass(frozen=True)
class Seeds:
    """The seeds of a report and how they were chosen (one of DRAWN, GIVEN, GIVEN_TUNING)."""

    seeds: tuple[int, ...]
    source: str

    @property
    def held_out(self) -> bool:
        return not set(self.seeds) & set(TUNING_SEEDS)


def draw_seeds(
    count: int, *, below: Callable[[int], int] = secrets.randbelow, forbidden: Sequence[int] = ()
) -> tuple[int, ...]:
    """``count`` distinct seeds in [0, SEED_RANGE), none of them a tuning seed nor in
    ``forbidden``. ``below(n)`` is the random source (a test passes a scripted one)."""
    if count < 1:
        raise ConfigError(f"--draw-seeds must be at least 1; got {count}")
    excluded = {*TUNING_SEEDS, *forbidden}
    seeds: list[int] = []
    for _ in range(_MAX_DRAWS):
        seed = below(SEED_RANGE)
        if seed not in excluded and seed not in seeds:
            seeds.append(seed)
            if len(seeds) == count:
                return tuple(seeds)
    raise ConfigError(f"drew {_MAX_DRAWS} seeds without finding {count} held-out ones")


def given_seeds(seeds: Sequence[int], *, allow_tuning: bool) -> Seeds:
    """Seeds pinned on the command line; a tuning seed among them is refused unless
    ``allow_tuning`` (and the report then says its seeds are not held out)."""
    tuned = sorted(set(seeds) & set(TUNING_SEEDS))
    if tuned and not allow_tuning:
        raise ConfigError(
            f"--seeds {', '.join(map(str, tuned))}: the default was tuned on these seeds "
            f"(TUNING_SEEDS = {', '.join(map(str, TUNING_SEEDS))} in "
            "benchmarks/byzantine/tuning.py), so a report on them is not held out; leave "
            "--seeds out to draw fresh ones, or pass --allow-tuning-seeds to run them anyway"
        )
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: a seed given twice")
    return Seeds(tuple(seeds), GIVEN_TUNING if tuned else GIVEN)
