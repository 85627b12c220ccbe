"""The relative norm bound, in one place: an update is refused when its norm exceeds
``validation.max_relative_norm`` times the lower median of a reference set of norms.

The reference is every norm accepted in the last committed round (the prior) plus every norm
accepted so far in this round. The lower median of n norms tolerates up to half of them being
arbitrary, so a minority of scaled or noisy updates cannot raise the bar for itself; the
prior keeps the first few arrivals of a round from capturing it. With fewer than
``relative_min_updates`` reference norms there is no bar yet.

The norms are kept sorted as they come and go, so the median costs O(log n) per arrival
instead of a sort of the whole reference each time.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedList

from phalanx.config import ValidationConfig
from phalanx.engine.validation import Rejected
from phalanx.types import RejectReason


class NormReference:
    def __init__(self, config: ValidationConfig, prior: Iterable[float] = ()) -> None:
        self._factor = config.max_relative_norm
        self._min_updates = config.relative_min_updates
        self._norms = SortedList(prior)

    def __len__(self) -> int:
        return len(self._norms)

    def add(self, norm: float) -> None:
        self._norms.add(norm)

    def remove(self, norm: float) -> None:
        self._norms.remove(norm)

    def median(self) -> float:
        """The lower median (``statistics.median_low``) of the reference norms."""
        if not self._norms:
            raise ValueError("no reference norms")
        return float(self._norms[(len(self._norms) - 1) // 2])

    def violation(self, norm: float) -> Rejected | None:
        """Rejected if ``norm`` is above the bound; None if within it or there is no bar."""
        factor, norms = self._factor, self._norms
        count = len(norms)
        if factor is None or count < self._min_updates:
            return None
        median = float(norms[(count - 1) // 2])  # count >= relative_min_updates >= 1
        if norm <= factor * median:
            return None
        return Rejected(
            RejectReason.NORM_RELATIVE, f"norm {norm:.4g} > {factor} x median {median:.4g}"
        )
