"""Divide-and-Conquer's spectral filter as a step in front of any rule (Shejwalkar and
Houmansadr, 2021, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and
Defenses for Federated Learning", NDSS, Algorithm 2).

Centre the rows on their mean, find the direction along which they spread most (the top
right singular vector of the centred rows), and drop the ``filter`` x f rows that lie
furthest out along it (squared projection). Why: colluders that push one direction
together -- a backdoor's trigger, a crafted model-poisoning update -- make that shared
push the rows' main axis of spread, and they are the rows furthest out along it; honest
rows on non-IID data spread too, but each in its own direction, so no single axis carries
much of their spread. Unlike coordinate-wise trimming (``winsorise``), the honest rows
that are kept keep every coordinate: a rare class's holders, the only ones pushing its
output weights, are not clipped on those weights unless they are themselves the round's
main outliers.

Departures from the paper: the projections come from the round's one Gram matrix (the top
eigenvector of the centred n x n Gram matrix gives the rows' projections up to the
singular value), so every coordinate is used and no subsample of coordinates is drawn,
which the paper does to afford the SVD on large models; and with one draw, one iteration.
The step never drops more than would leave the parts after it fewer rows than they need
to tolerate f (``follow``, as bucketing): a round whose validation refused some updates
drops fewer. Dropped rows are reported as discarded, not flagged: a row that lies far out
this round is what an honest client holding rare data is now and then, and judging clients
over rounds is ``persistent_flags``'s. With ``clamp``, nothing is dropped: each suspect is
clamped, per coordinate, to the range of the other rows (less their ``trim`` extremes at
each end), so it keeps whatever the others also do (not from the paper; measured in
docs/byzantine_tuning.md).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from phalanx.aggregation.base import FollowedPart, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class DncParams(Params):
    filter: float = Field(1.0, gt=0, le=2, description="rows dropped, as a multiple of f (c)")
    # Why: dropping f rows every round drops honest rows every round, and on non-IID data
    # those are the rows that hold a rare class. Clamped instead, a suspect keeps every
    # coordinate within the others' range and loses only what lies beyond it -- a trigger's
    # weights, which the others leave near zero.
    clamp: bool = Field(
        False, description="clamp the suspects per coordinate to the others' range; no drop"
    )
    trim: int | None = Field(
        None,
        ge=0,
        description="with clamp: the others' range without this many extremes at each end; null: f",
    )


def spectral_scores(gram: torch.Tensor) -> torch.Tensor:
    """Per row, its squared projection on the top principal axis of the rows centred on
    their (plain) mean, from the rows' Gram matrix: ``lambda_1 u_i^2`` where (lambda_1,
    u) is the top eigenpair of the centred Gram matrix."""
    n = gram.shape[0]
    centring = torch.eye(n, dtype=torch.float64) - 1.0 / n
    centred = centring @ gram.double() @ centring
    values, vectors = torch.linalg.eigh((centred + centred.T) / 2)
    scores: torch.Tensor = values[-1].clamp(min=0) * vectors[:, -1].square()
    return scores


class Dnc(FollowedPart[DncParams]):
    name = "dnc"
    tolerance = (2, 1)

    def drop_count(self, n: int, f: int) -> int:
        """Rows to drop of ``n``: ``filter`` x f, fewer when the parts after this one would
        otherwise get fewer than the a f + b rows they need."""
        need = self.rows_needed(f)
        return max(0, min(math.ceil(self.params.filter * f), n - need))

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        n = rows.count
        self.require_tolerance(n, f)
        if self.params.clamp:
            return self._clamped(rows, f)
        drop = self.drop_count(n, f)
        if drop == 0:
            return rows
        scores = spectral_scores(rows.gram())
        dropped = torch.sort(-scores, stable=True).indices[:drop]
        rows.discard(dropped)
        kept = sorted(set(range(n)) - set(dropped.tolist()))
        matrix = torch.zeros(len(kept), n, dtype=torch.float64)
        matrix[torch.arange(len(kept)), kept] = 1.0
        owners = tuple(rows.owners[i] for i in kept)
        return rows.remix(matrix, rows.weights[kept], owners)

    def _clamped(self, rows: Rows, f: int) -> Rows:
        """The ``filter`` x f suspects clamped, per coordinate, to the range of the other
        rows less their ``trim`` extremes at each end (a colluder the filter missed)."""
        n = rows.count
        count = min(math.ceil(self.params.filter * f), n - 1)
        if count == 0:
            return rows
        trim = f if self.params.trim is None else self.params.trim
        suspects = torch.sort(-spectral_scores(rows.gram()), stable=True).indices[:count]
        others = torch.ones(n, dtype=torch.bool)
        others[suspects] = False
        x = rows.materialise().clone()
        ordered = torch.sort(x[others], dim=0).values
        trim = min(trim, (ordered.shape[0] - 1) // 2)
        low, high = ordered[trim], ordered[ordered.shape[0] - 1 - trim]
        x[suspects] = torch.minimum(torch.maximum(x[suspects], low), high)
        return rows.replaced(x)
