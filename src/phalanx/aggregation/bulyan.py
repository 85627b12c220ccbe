"""Bulyan (El Mhamdi, Guerraoui and Rouault, 2018, "The Hidden Vulnerability of Distributed
Learning in Byzantium", ICML).

Two stages: pick theta = n - 2f rows by repeated Krum (each pick removed before the next),
then per coordinate average the beta = theta - 2f selected values closest to their median.
Needs n >= 4f + 3. Rows never picked in the first stage are reported as discarded.
"""

from __future__ import annotations

import torch

from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.coordinatewise import closest_to_median_mean
from phalanx.aggregation.krum import krum_scores
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


def bulyan_select(sq_distances: torch.Tensor, f: int, theta: int) -> list[int]:
    """Repeated Krum: ``theta`` indices, each the best-scored among the rows still left."""
    remaining = list(range(sq_distances.shape[0]))
    chosen: list[int] = []
    for _ in range(theta):
        sub = sq_distances[remaining][:, remaining]
        best = int(torch.argmin(krum_scores(sub, f)))  # first minimum: canonical order
        chosen.append(remaining.pop(best))
    return chosen


class Bulyan(Part[Params]):
    name = "bulyan"
    tolerance = (4, 3)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        n = rows.count
        self.require_tolerance(n, f)
        theta = n - 2 * f
        chosen = bulyan_select(rows.sq_distances(), f, theta)
        rows.discard(sorted(set(range(n)) - set(chosen)))
        selected = torch.tensor(sorted(chosen))
        values = rows.materialise()[selected]
        return Aggregate(closest_to_median_mean(values, theta - 2 * f))
