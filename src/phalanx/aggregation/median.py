"""Coordinate-wise median (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML).

Per coordinate the median of the clients' values: with f < n/2 Byzantine rows it stays
within the range of the honest values. Unweighted: every client has one vote, so a client
cannot buy influence by claiming many examples.
"""

from __future__ import annotations

from phalanx.aggregation.base import Aggregate, RoundContext, require
from phalanx.aggregation.coordinatewise import median
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class MedianParams(Params):
    pass


class Median:
    name = "median"

    def __init__(self, params: MedianParams) -> None:
        self.params = params

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        n = rows.count
        require(self.name, n >= 2 * f + 1, "n >= 2f + 1", n=n, f=f)
        return Aggregate(median(rows.materialise()))
