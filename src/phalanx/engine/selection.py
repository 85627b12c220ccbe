"""Which clients a round asks: a seeded sample of the eligible ones, never a silent fallback
to clients the health monitor has sidelined."""

from __future__ import annotations

from collections.abc import Sequence

from phalanx.core.rng import numpy_rng
from phalanx.types import ClientId


def sample_clients(
    candidates: Sequence[ClientId], count: int, *, seed: int, round_index: int, stream: str
) -> list[ClientId]:
    """``count`` distinct clients drawn without replacement; the result depends only on
    the sorted candidate set, the seed, the round and the stream name."""
    pool = sorted(candidates)
    if count <= 0 or not pool:
        return []
    rng = numpy_rng(seed, stream, round_index)
    chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[int(i)] for i in chosen]
