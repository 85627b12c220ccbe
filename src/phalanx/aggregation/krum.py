"""Krum and Multi-Krum (Blanchard et al., 2017, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS; Multi-Krum: El Mhamdi et al., 2018).

Each row is scored by the summed squared distance to its n - f - 2 nearest other rows;
Multi-Krum averages (example-weighted) the m best-scored rows, Krum is m = 1. Distances come
from the round's one Gram matrix. Rows not selected are reported as discarded.
"""

from __future__ import annotations

import torch
from pydantic import Field

from phalanx.aggregation.base import Aggregate, Part, RoundContext, refuse
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


def krum_scores(sq_distances: torch.Tensor, f: int) -> torch.Tensor:
    """Sum over each row's n - f - 2 (at least 1) nearest others of squared distance."""
    n = sq_distances.shape[0]
    # At least one neighbour: Bulyan's last picks (f = 1, 3 rows left) would otherwise score
    # 0 everywhere and take the first row left, a lone outlier as readily as an honest row.
    neighbours = min(max(n - f - 2, 1), n - 1)
    others = sq_distances + torch.diag(torch.full((n,), float("inf"), dtype=sq_distances.dtype))
    nearest = torch.topk(others, neighbours, dim=1, largest=False).values
    return nearest.sum(dim=1)


def krum_select(sq_distances: torch.Tensor, f: int, m: int) -> torch.Tensor:
    """Indices of the ``m`` best-scored rows; ties go to the lower index (canonical order)."""
    order = torch.sort(krum_scores(sq_distances, f), stable=True).indices
    return order[:m]


class MultiKrumParams(Params):
    m: int | None = Field(None, ge=1, description="rows averaged; null: n - f")


class MultiKrum(Part[MultiKrumParams]):
    name = "multi_krum"
    tolerance = (2, 3)

    def selection_size(self, n: int, f: int) -> int:
        return n - f if self.params.m is None else self.params.m

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        n = rows.count
        self.require_tolerance(n, f)
        m = self.selection_size(n, f)
        if m > n:
            refuse(self.name, f"m <= n (m={m})", n=n, f=f)
        chosen = krum_select(rows.sq_distances(), f, m)
        coefficients = torch.zeros(n, dtype=torch.float64)
        chosen_weights = rows.weights[chosen]
        total = float(chosen_weights.sum())
        # Only the weights of all rows must sum to > 0: chosen rows that all weigh 0 (Krum
        # picking a zero-weight row) count equally instead of dividing 0 by 0.
        coefficients[chosen] = chosen_weights / total if total > 0 else 1.0 / len(chosen)
        rows.discard(torch.nonzero(coefficients == 0).flatten())
        return Aggregate(rows.combine(coefficients))


class Krum(MultiKrum):
    name = "krum"

    def __init__(self, params: Params) -> None:
        super().__init__(MultiKrumParams(m=1))
