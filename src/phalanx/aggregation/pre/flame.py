"""FLAME's filter and clipping as a step in front of any rule (Nguyen et al., 2022, "FLAME:
Taming Backdoors in Federated Learning", USENIX Security).

Backdoored updates point in their own direction, whatever their length. FLAME clusters the
updates by cosine distance with HDBSCAN (minimum cluster size n/2 + 1, so exactly one
majority cluster can form) and admits only that cluster; it clips each admitted update to
the median norm of the round's updates, so a boosted one cannot dominate; and it adds
Gaussian noise of std ``noise`` x that median norm to the aggregate, to wash out what is left
of the backdoor. The noise is the pipeline's (drawn from (seed, round)): this step only
sets its scale. Departure from the paper: clustering runs on the updates (deltas), not on
the local models' weights, whose cosines are all near 1, dominated by the shared global
model. Cosine distances come from the round's one Gram matrix; the clustering itself is
``sklearn.cluster.HDBSCAN`` on the n x n precomputed matrix.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from phalanx.aggregation.base import Part, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class FlameParams(Params):
    noise: float = Field(
        0.001, ge=0, description="noise std on the aggregate, x the median norm (lambda)"
    )


def cosine_distances(gram: torch.Tensor) -> torch.Tensor:
    """``1 - cos(x_i, x_j)`` in [0, 2] from a Gram matrix; a zero row is at distance 1 from
    every other row (cosine 0), 0 from itself."""
    norms = gram.diagonal().clamp(min=0).sqrt()
    scale = norms[:, None] * norms[None, :]
    cosines = torch.where(scale > 0, gram / scale.clamp(min=1e-300), 0.0)
    distances = (1 - cosines).clamp(0, 2)
    distances.fill_diagonal_(0)
    return distances


def majority_cluster(distances: torch.Tensor) -> list[int]:
    """Rows of the one cluster of at least n/2 + 1 rows that HDBSCAN finds, in order; every
    row when there are fewer than 3 or when no cluster forms (nothing stands out)."""
    n = distances.shape[0]
    if n < 3:
        return list(range(n))
    # Imported here: scikit-learn costs about 0.9 s to import, paid only by runs using FLAME.
    from sklearn.cluster import HDBSCAN

    clustering = HDBSCAN(
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,
        copy=True,
    )
    labels = clustering.fit(np.ascontiguousarray(distances.double().numpy())).labels_
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return list(range(n))
    majority = int(np.bincount(clustered).argmax())  # ties: the lowest label
    return [int(i) for i in np.flatnonzero(labels == majority)]


class Flame(Part[FlameParams]):
    name = "flame"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        n = rows.count
        self.require_tolerance(n, f)
        gram = rows.gram()
        admitted = majority_cluster(cosine_distances(gram))
        norms = gram.diagonal().clamp(min=0).sqrt()
        bound = float(norms.median())
        factors = torch.where(norms > bound, bound / norms.clamp(min=1e-300), 1.0)
        rows.discard(sorted(set(range(n)) - set(admitted)))
        kept = torch.tensor(admitted)
        rows.note_scaled(torch.where(torch.isin(torch.arange(n), kept), factors, 1.0))
        rows.shared.noise_std = self.params.noise * bound
        matrix = torch.zeros(len(admitted), n, dtype=torch.float64)
        matrix[torch.arange(len(admitted)), kept] = factors[kept]
        owners = tuple(rows.owners[i] for i in admitted)
        return rows.remix(matrix, rows.weights[kept], owners)
