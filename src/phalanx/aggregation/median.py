"""Coordinate-wise median (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML).

Per coordinate the median of the clients' values: with f < n/2 Byzantine rows it stays
within the range of the honest values. Unweighted: every client has one vote, so a client
cannot buy influence by claiming many examples.
"""

from __future__ import annotations

from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.coordinatewise import median
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class Median(Part[Params]):
    name = "median"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        self.require_tolerance(rows.count, f)
        return Aggregate(median(rows.materialise()))
