"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML).

Per coordinate, drop the ``trim`` largest and smallest values (default: f each side) and
average the rest: at least the honest extremes bound the result. Unweighted, as the median.
"""

from __future__ import annotations

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
        n = rows.count
        trim = f if self.params.trim is None else self.params.trim
        self.require_tolerance(n, f)
        if trim < f or n < 2 * trim + 1:
            refuse(self.name, f"f <= trim and n >= 2 trim + 1 (trim={trim})", n=n, f=f)
        return Aggregate(trimmed_mean(rows.materialise(), trim))
