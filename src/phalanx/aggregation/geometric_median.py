"""Geometric median by smoothed Weiszfeld iterations, as in RFA (Pillutla, Kakade and
Harchaoui, 2022, "Robust Aggregation for Federated Learning", IEEE TSP).

The minimiser of the weighted sum of distances to the rows; its breakdown point is 1/2.
Each iterate is a convex combination of the rows, ``z = a @ X``, so the distances it needs,
``|z - x_i|^2 = a'Ga - 2(Ga)_i + G_ii``, come from the Gram matrix in O(n^2) per iteration:
iterating to convergence costs nothing in d, and X is read once more at the end.
"""

from __future__ import annotations

import torch
from pydantic import Field

from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class GeometricMedianParams(Params):
    nu: float = Field(1e-6, gt=0, description="smoothing: distances below nu count as nu")
    max_iter: int = Field(100, ge=1, description="Weiszfeld iterations at most")
    tol: float = Field(
        1e-7, ge=0, description="stop when the objective improves by less (x median distance)"
    )


def weiszfeld_coefficients(
    gram: torch.Tensor, weights: torch.Tensor, *, nu: float, max_iter: int, tol: float
) -> torch.Tensor:
    """Coefficients ``a`` (on the simplex) of the smoothed geometric median ``a @ X``."""
    alpha = weights / weights.sum()
    diag = gram.diagonal()
    coefficients = alpha.clone()
    previous = float("inf")
    for _ in range(max_iter):
        ga = gram @ coefficients
        distances = (coefficients @ ga - 2 * ga + diag).clamp(min=0).sqrt()
        objective = float(alpha @ distances)
        # Relative to the median distance, not to the objective: f rows far away inflate
        # the objective, and a tolerance relative to it would stop the iterate far from
        # the honest rows (the median distance is an honest one while f < n/2).
        if previous - objective <= tol * float(distances.median()):
            break
        previous = objective
        beta = alpha / distances.clamp(min=nu)
        coefficients = beta / beta.sum()
    return coefficients


class GeometricMedian(Part[GeometricMedianParams]):
    name = "geometric_median"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        self.require_tolerance(rows.count, f)
        p = self.params
        coefficients = weiszfeld_coefficients(
            rows.gram(), rows.weights, nu=p.nu, max_iter=p.max_iter, tol=p.tol
        )
        return Aggregate(rows.combine(coefficients))
