"""Geometric median by smoothed Weiszfeld iterations, as in RFA (Pillutla, Kakade and
Harchaoui, 2022, "Robust Aggregation for Federated Learning", IEEE TSP).

The minimiser of the weighted sum of distances to the rows; its breakdown point is 1/2.
Each iterate is a convex combination of the rows, ``z = a @ X``, so the distances it needs,
``|z - x_i|^2 = a'Ga - 2(Ga)_i + G_ii``, come from the Gram matrix in O(n^2) per iteration:
iterating to convergence costs nothing in d, and X is read once more at the end.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class GeometricMedianParams(Params):
    nu: float = Field(1e-6, gt=0, description="smoothing: distances below nu count as nu")
    max_iter: int = Field(1000, ge=1, description="Weiszfeld iterations at most")
    tol: float = Field(
        1e-6,
        ge=0,
        description="stop within this distance of the fixed point (x median distance)",
    )


def weiszfeld_coefficients(
    gram: torch.Tensor, weights: torch.Tensor, *, nu: float, max_iter: int, tol: float
) -> torch.Tensor:
    """Coefficients ``a`` (on the simplex) of the smoothed geometric median ``a @ X``.

    Stops once the iterate is within ``tol`` x the median distance of the fixed point.
    Weiszfeld contracts linearly, step k+1 <= rho x step k, so the fixed point lies within
    step x rho / (1 - rho) of the iterate; rho is estimated by the ratio of the last two
    steps, and the step itself must also be under the tolerance (early ratios are noisy).
    Steps come from the Gram matrix: ``|(a' - a) @ X| = sqrt(delta' G delta)``. Stopping on
    the objective instead (as before) stopped up to 9e-4 from the fixed point: near it the
    objective improves by the square of the step, so a small improvement is no small step.
    Relative to the median distance, not the objective: f rows far away inflate the
    objective, while the median distance is an honest one while f < n/2."""
    alpha = weights / weights.sum()
    diag = gram.diagonal()
    coefficients = alpha.clone()
    previous = math.inf
    for _ in range(max_iter):
        ga = gram @ coefficients
        distances = (coefficients @ ga - 2 * ga + diag).clamp(min=0).sqrt()
        beta = alpha / distances.clamp(min=nu)
        delta = beta / beta.sum() - coefficients
        coefficients = coefficients + delta
        step = math.sqrt(max(float(delta @ gram @ delta), 0.0))
        bound = tol * float(distances.median())
        rate = step / previous if previous > 0 else 0.0
        if step == 0 or (step <= bound and rate < 1 and step * rate / (1 - rate) <= bound):
            break
        previous = step
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
