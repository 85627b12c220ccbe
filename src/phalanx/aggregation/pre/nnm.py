"""Nearest-neighbour mixing (Allouah et al., 2023, "Fixing by Mixing: A Recipe for Optimal
Byzantine ML under Heterogeneity", AISTATS).

Each row is replaced by the plain average of its n - f nearest rows (itself included), so
every mixed row is mostly honest and the rule behind it sees a tighter, less heterogeneous
cloud. The averaging is a mixing matrix applied to the Gram matrix, not to the d-vectors.
"""

from __future__ import annotations

import torch

from phalanx.aggregation.base import Part, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


def nnm_matrix(sq_distances: torch.Tensor, f: int) -> torch.Tensor:
    """Row i averages the n - f rows nearest to row i; ties go to the lower index."""
    n = sq_distances.shape[0]
    keep = n - f
    # A stable sort of each row keeps ties in canonical order and row i first among its
    # zero-distance duplicates.
    order = torch.sort(sq_distances, dim=1, stable=True).indices[:, :keep]
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.scatter_(1, order, 1.0 / keep)
    return matrix


class NNM(Part[Params]):
    name = "nnm"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        n = rows.count
        self.require_tolerance(n, f)
        if f == 0:
            return rows
        return rows.remix(nnm_matrix(rows.sq_distances(), f), rows.weights, rows.owners)
