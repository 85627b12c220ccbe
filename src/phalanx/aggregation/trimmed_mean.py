"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML).

Per coordinate, drop the ``trim`` largest and smallest values (default: f each side) and
average the rest: at least the honest extremes bound the result. Unweighted, as the median.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from phalanx.aggregation.base import Aggregate, Part, RoundContext, refuse
from phalanx.aggregation.coordinatewise import trimmed_mean
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class TrimmedMeanParams(Params):
    trim: int | None = Field(None, ge=0, description="values dropped at each end; null: f")


class TrimmedMean(Part[TrimmedMeanParams]):
    name = "trimmed_mean"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        trim = checked_trim(self, self.params.trim, n=rows.count, f=f)
        return Aggregate(trimmed_mean(rows.materialise(), trim))


def checked_trim(part: Part[Any], trim: int | None, *, n: int, f: int) -> int:
    """The values ``part`` drops (or clamps) at each end per coordinate: ``trim``, f when
    None; failing with the numbers unless n >= 2f + 1 and f <= trim <= (n - 1) / 2."""
    trim = f if trim is None else trim
    part.require_tolerance(n, f)
    if trim < f or n < 2 * trim + 1:
        refuse(part.name, f"f <= trim and n >= 2 trim + 1 (trim={trim})", n=n, f=f)
    return trim
