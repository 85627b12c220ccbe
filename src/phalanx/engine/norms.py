"""The relative norm bound, in one place: an update is refused when its norm exceeds
``validation.max_relative_norm`` times the lower median of a reference set of norms.

The reference is every norm accepted in the last committed round (the prior) plus every norm
accepted so far in this round. The lower median of n norms tolerates up to half of them being
arbitrary, so a minority of scaled or noisy updates cannot raise the bar for itself; the
prior keeps the first few arrivals of a round from capturing it. With fewer than
``relative_min_updates`` reference norms there is no bar yet.

The median is a running one: two heaps, the lower half (a max-heap, stored negated) and the
upper half, so an arrival costs a push and at most one move between them (O(log n), in C),
and the median is the lower half's top. A removal (rare: an outlier found late) is lazy: it
is counted, and the entry is dropped when it reaches its heap's top. A sorted list did the
same in O(log n) too, but its positional lookup of the middle walks an index in Python once
the reference outgrows one of its sublists (a round of thousands): most of that cost was
per arrival at 10,000 clients per round and none of it at 1,000.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from phalanx.config import ValidationConfig
from phalanx.engine.validation import Rejected
from phalanx.types import RejectReason


class NormReference:
    def __init__(self, config: ValidationConfig, prior: Iterable[float] = ()) -> None:
        self._factor = config.max_relative_norm
        self._min_updates = config.relative_min_updates
        ordered = sorted(prior)
        half = (len(ordered) + 1) // 2  # the lower half holds the median: ceil(n / 2)
        self._low = [0.0 - norm for norm in reversed(ordered[:half])]  # sorted: a heap
        self._high = ordered[half:]  # sorted: a heap
        self._sizes = [half, len(ordered) - half]  # live entries (low, high)
        self._gone: tuple[dict[float, int], dict[float, int]] = ({}, {})  # lazily removed
        self._count: dict[float, int] = {}  # every live norm: what ``remove`` may take
        for norm in ordered:
            self._count[norm] = self._count.get(norm, 0) + 1

    def __len__(self) -> int:
        return self._sizes[0] + self._sizes[1]

    def add(self, norm: float) -> None:
        self._count[norm] = self._count.get(norm, 0) + 1
        sizes = self._sizes
        if sizes[0] and norm > 0.0 - self._low[0]:
            heapq.heappush(self._high, norm)
            sizes[1] += 1
            if sizes[1] > sizes[0]:
                self._move_up()
        else:
            heapq.heappush(self._low, 0.0 - norm)
            sizes[0] += 1
            if sizes[0] > sizes[1] + 1:
                self._move_down()

    def remove(self, norm: float) -> None:
        """Take one copy of ``norm`` (one that was added, or in the prior) out."""
        left = self._count.get(norm, 0)
        if not left:
            raise ValueError(f"norm {norm!r} is not in the reference")
        self._count[norm] = left - 1
        side = 0 if norm <= 0.0 - self._low[0] else 1  # the low top is live: see _prune
        gone = self._gone[side]
        gone[norm] = gone.get(norm, 0) + 1
        self._sizes[side] -= 1
        self._prune(side)
        sizes = self._sizes
        if sizes[0] > sizes[1] + 1:
            self._move_down()
        elif sizes[1] > sizes[0]:
            self._move_up()

    def median(self) -> float:
        """The lower median (``statistics.median_low``) of the reference norms."""
        if not self._sizes[0]:
            raise ValueError("no reference norms")
        return 0.0 - self._low[0]

    def violation(self, norm: float) -> Rejected | None:
        """Rejected if ``norm`` is above the bound; None if within it or there is no bar."""
        factor, sizes = self._factor, self._sizes
        if factor is None or sizes[0] + sizes[1] < self._min_updates:
            return None
        median = 0.0 - self._low[0]  # at least relative_min_updates >= 1 norms
        if norm <= factor * median:
            return None
        return Rejected(
            RejectReason.NORM_RELATIVE, f"norm {norm:.4g} > {factor} x median {median:.4g}"
        )

    # -- keeping the halves balanced (low: ceil(n / 2) entries) and their tops live -----

    def _move_down(self) -> None:
        """The lower half's largest goes to the upper half."""
        heapq.heappush(self._high, 0.0 - heapq.heappop(self._low))
        self._sizes[0] -= 1
        self._sizes[1] += 1
        self._prune(0)

    def _move_up(self) -> None:
        """The upper half's smallest goes to the lower half."""
        heapq.heappush(self._low, 0.0 - heapq.heappop(self._high))
        self._sizes[0] += 1
        self._sizes[1] -= 1
        self._prune(1)

    def _prune(self, side: int) -> None:
        """Drop removed entries from the top of one heap, so its top is a live norm."""
        gone = self._gone[side]
        if not gone:
            return
        heap = self._low if side == 0 else self._high
        while heap:
            top = heap[0] if side else 0.0 - heap[0]
            left = gone.get(top, 0)
            if not left:
                return
            heapq.heappop(heap)
            if left == 1:
                del gone[top]
            else:
                gone[top] = left - 1
