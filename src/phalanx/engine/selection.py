"""Which clients a round asks: a seeded sample of the eligible ones, never a silent fallback
to clients the health monitor has sidelined.

Draws are indices into the candidates in sorted order, from a generator keyed by (seed,
round, stream): the result depends on the candidate *set* only. Candidates that are already
kept sorted (the health index's sets) are sampled by rank, so a round never sorts the
population; a replacement skips the clients the round already asked without copying the
set (``rank_excluding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sortedcontainers import SortedList

from phalanx.core.rng import numpy_rng
from phalanx.types import ClientId

# From this many ranks on, ``at_ranks`` reads a SortedList in one pass instead of by index.
_BATCH_FROM = 64


class Ranked(Protocol):
    """A sorted collection indexable by rank (a sorted list, SortedList)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> ClientId: ...


def sample_clients(
    candidates: Sequence[ClientId], count: int, *, seed: int, round_index: int, stream: str
) -> list[ClientId]:
    """``count`` distinct clients drawn without replacement; the result depends only on
    the candidate set, the seed, the round and the stream name."""
    return sample_ranked(
        sorted(candidates), count, seed=seed, round_index=round_index, stream=stream
    )


def draw_ranks(size: int, count: int, *, seed: int, round_index: int, stream: str) -> list[int]:
    """``min(count, size)`` distinct ranks in ``range(size)``, in draw order."""
    if count <= 0 or size <= 0:
        return []
    rng = numpy_rng(seed, stream, round_index)
    return [int(i) for i in rng.choice(size, size=min(count, size), replace=False)]


def sample_ranked(
    pool: Ranked, count: int, *, seed: int, round_index: int, stream: str
) -> list[ClientId]:
    """Like ``sample_clients`` for candidates already sorted: O(count) lookups."""
    ranks = draw_ranks(len(pool), count, seed=seed, round_index=round_index, stream=stream)
    return at_ranks(pool, ranks)


def at_ranks(pool: Ranked, ranks: list[int]) -> list[ClientId]:
    """``[pool[r] for r in ranks]``. From a SortedList, many ranks are read in one ordered
    pass over its sublists (``SortedList._lists``, the library's documented layout): a
    positional lookup walks its index in Python, and thousands of them, scattered over a
    large population, were most of a big round's selection."""
    if not isinstance(pool, SortedList) or len(ranks) < _BATCH_FROM:
        return [pool[r] for r in ranks]
    found: list[ClientId] = [0] * len(ranks)
    sublists = pool._lists
    which, start, end = -1, 0, 0
    for place in sorted(range(len(ranks)), key=ranks.__getitem__):
        rank = ranks[place]
        while rank >= end:
            which += 1
            start, end = end, end + len(sublists[which])
        found[place] = sublists[which][rank - start]
    return found


def rank_excluding(pool: Ranked, excluded: SortedList, rank: int) -> ClientId:
    """The client at ``rank`` among ``pool`` minus ``excluded`` (a sorted subset of
    ``pool``), found by rank arithmetic in O(log) steps instead of copying the difference.

    The position p in ``pool`` satisfies p = rank + #(excluded <= pool[p]); iterating that
    from p = rank climbs monotonically to its least solution, whose client is not excluded.
    """
    position = rank
    for _ in range(len(excluded) + 1):
        skipped = int(excluded.bisect_right(pool[position]))
        if rank + skipped == position:
            return pool[position]
        position = rank + skipped
    raise RuntimeError("rank_excluding did not converge: excluded is not a subset of pool")


def sample_one_excluding(
    pool: Ranked, excluded: SortedList, *, seed: int, round_index: int, stream: str
) -> ClientId | None:
    """One client of ``pool`` minus ``excluded``, drawn as ``sample_clients`` would draw it
    from that difference."""
    ranks = draw_ranks(
        len(pool) - len(excluded), 1, seed=seed, round_index=round_index, stream=stream
    )
    return rank_excluding(pool, excluded, ranks[0]) if ranks else None
