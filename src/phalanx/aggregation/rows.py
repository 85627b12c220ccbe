"""The stack a rule sees, and the one pairwise-distance computation of a round.

Pre-aggregation steps (clipping, nearest-neighbour mixing, bucketing) are linear in the
updates: each row they produce is a combination of the original rows. ``Rows`` therefore
keeps the original ``n x d`` stack untouched and records the steps as an ``m x n`` mixing
matrix. Distances between current rows come from the Gram matrix of the original rows,
computed once per round (float64, so neither large translations nor outliers at 1e9 swamp
the honest distances) and carried through the mixing matrix in O(n^3), never O(n^2 d).
Rules that return a combination of rows (Krum, geometric median, centred clipping) touch
the ``d`` dimension once more, for the final matrix-vector product; coordinate-wise rules
materialise the current rows once. A step that is not linear (winsorising) hands on a
new stack with ``replaced``; the round's reports go with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from phalanx.errors import AggregationError

GRAM_CHUNK = 8192  # columns per float64 block: 100 rows x 8192 x 8 B = 6.5 MB, cache-sized
ROW_CHUNK = 16384  # columns per float32 block of a per-row reduction


def per_row_sum(
    updates: torch.Tensor, block_sum: Callable[[int, int], torch.Tensor]
) -> torch.Tensor:
    """Sum over column blocks of ``block_sum(start, stop)`` (one float32 value per row),
    accumulated in float64: one cache-friendly pass, no n x d temporary, and rounding
    that grows with the block size, not with d."""
    total = torch.zeros(updates.shape[0], dtype=torch.float64)
    for start in range(0, updates.shape[1], ROW_CHUNK):
        total += block_sum(start, start + ROW_CHUNK).double()
    return total


def gram_matrix(updates: torch.Tensor) -> torch.Tensor:
    """``updates @ updates.T`` in float64, accumulated a column block at a time with BLAS's
    symmetric rank-k update (half the work of a general product)."""
    # Imported here: scipy.linalg costs about 0.2 s to import, paid only by the rules that
    # need a Gram matrix (a FedAvg run never does).
    from scipy.linalg import blas

    n, d = updates.shape
    rows = updates.detach().contiguous().numpy()
    gram = np.zeros((n, n), dtype=np.float64, order="F")
    for start in range(0, d, GRAM_CHUNK):
        block = rows[:, start : start + GRAM_CHUNK].astype(np.float64)
        gram = blas.dsyrk(1.0, block.T, beta=1.0, c=gram, trans=1, lower=0, overwrite_c=1)
    upper = torch.from_numpy(np.triu(gram))
    return upper + upper.triu(1).T


def sq_distances_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``|x_i - x_j|^2`` from a Gram matrix, clamped at 0."""
    diag = gram.diagonal()
    distances = (diag[:, None] + diag[None, :] - 2 * gram).clamp_(min=0)
    distances.fill_diagonal_(0)
    return distances


@dataclass
class Shared:
    """What every ``Rows`` derived from one stack shares: the stack, its lazily computed
    Gram matrix and norms, and the round's reports in input-row indices (``discarded``,
    ``scaled`` with the smallest factor, ``flagged``), accumulated across steps. Steps
    also leave here what is not a linear mix of rows: ``state`` to carry to the next round
    (merged with the rule's) and ``noise_std``, the std of Gaussian noise the pipeline adds
    to the rule's result (FLAME)."""

    updates: torch.Tensor
    gram: torch.Tensor | None = None
    sq_norms: torch.Tensor | None = None
    discarded: set[int] = field(default_factory=set)
    scaled: dict[int, float] = field(default_factory=dict)
    flagged: set[int] = field(default_factory=set)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    noise_std: float = 0.0


@dataclass
class Rows:
    """Current rows = ``mix @ updates`` (``mix`` None: the updates themselves).

    ``owners[j]`` are the input rows that current row ``j`` speaks for (row ``i`` itself
    after clipping or mixing; a bucket's members after bucketing), so what a rule discards
    or scales is reported (in ``shared``) per client.
    """

    shared: Shared
    weights: torch.Tensor  # m, float64
    mix: torch.Tensor | None = None  # m x n, float64
    owners: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def of(cls, updates: torch.Tensor, weights: torch.Tensor) -> Rows:
        n = updates.shape[0]
        return cls(
            Shared(updates.float()),
            weights.double(),
            owners=tuple((i,) for i in range(n)),
        )

    @property
    def count(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.shared.updates.shape[1])

    def base_gram(self) -> torch.Tensor:
        if self.shared.gram is None:
            self.shared.gram = gram_matrix(self.shared.updates)
        return self.shared.gram

    def gram(self) -> torch.Tensor:
        base = self.base_gram()
        return base if self.mix is None else self.mix @ base @ self.mix.T

    def sq_distances(self) -> torch.Tensor:
        return sq_distances_from_gram(self.gram())

    def sq_norms(self) -> torch.Tensor:
        """Squared norms of the current rows: from the Gram matrix when it exists, else one
        float64-accumulated pass over the original rows."""
        if self.mix is not None or self.shared.gram is not None:
            return self.gram().diagonal().clone()
        if self.shared.sq_norms is None:
            x = self.shared.updates
            self.shared.sq_norms = per_row_sum(
                x, lambda a, b: torch.linalg.vector_norm(x[:, a:b], dim=1).square()
            )
        return self.shared.sq_norms

    def sq_distances_to(self, vector: torch.Tensor) -> torch.Tensor:
        """``|row_i - vector|^2`` for the current rows. Without mixing, straight from the
        differences a block at a time (no cancellation however far from the origin);
        after mixing, from the Gram matrix."""
        v = vector.detach().float()
        if self.mix is None:
            x = self.shared.updates
            return per_row_sum(
                x, lambda a, b: torch.linalg.vector_norm(x[:, a:b] - v[a:b], dim=1).square()
            )
        v_sq = float(v.double().square().sum())
        return (self.sq_norms() - 2 * self.dot(v) + v_sq).clamp(min=0)

    def dot(self, vector: torch.Tensor) -> torch.Tensor:
        """``current_rows @ vector`` (m, float64) in one pass over the original rows,
        accumulated in float64 across column blocks."""
        x, v = self.shared.updates, vector.detach().float()
        base = per_row_sum(x, lambda a, b: x[:, a:b] @ v[a:b])
        return base if self.mix is None else self.mix @ base

    def materialise(self) -> torch.Tensor:
        """The current rows as an ``m x d`` float32 tensor."""
        if self.mix is None:
            return self.shared.updates
        return self.mix.float() @ self.shared.updates

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``coefficients @ current_rows`` as a d vector, in one pass over the original rows."""
        base = coefficients.double() if self.mix is None else coefficients.double() @ self.mix
        return base.float() @ self.shared.updates

    def remix(
        self,
        matrix: torch.Tensor,
        weights: torch.Tensor,
        owners: tuple[tuple[int, ...], ...],
    ) -> Rows:
        """Rows ``matrix @ current_rows``, sharing this stack's Gram matrix."""
        mix = matrix.double() if self.mix is None else matrix.double() @ self.mix
        return Rows(self.shared, weights.double(), mix, owners)

    def replaced(self, updates: torch.Tensor) -> Rows:
        """Rows ``updates`` (one per current row, same weights and owners) in place of the
        current ones, for a step that changes rows other than by mixing them (winsorising).
        The round's reports carry over; the Gram matrix and norms are the new rows'."""
        if updates.shape != (self.count, self.dim):
            raise AggregationError(
                f"{tuple(updates.shape)} replacement rows for {self.count} x {self.dim}"
            )
        shared = replace(self.shared, updates=updates.float(), gram=None, sq_norms=None)
        return Rows(shared, self.weights, None, self.owners)

    def discard(self, rows: torch.Tensor | list[int]) -> None:
        """Record that current ``rows`` had no say (reported for the clients they speak for)."""
        self.shared.discarded |= self._owners_of(rows)

    def flag(self, rows: torch.Tensor | list[int]) -> None:
        """Record that current ``rows`` look suspicious (for the clients they speak for)."""
        self.shared.flagged |= self._owners_of(rows)

    def note_scaled(self, factors: torch.Tensor) -> None:
        """Record per-row scale factors; only factors below 1 are reported."""
        scaled = self.shared.scaled
        for row, factor in enumerate(factors.tolist()):
            if factor < 1.0:
                for owner in self.owners[row]:
                    scaled[owner] = min(factor, scaled.get(owner, 1.0))

    def _owners_of(self, rows: torch.Tensor | list[int]) -> set[int]:
        indices = torch.as_tensor(rows, dtype=torch.long).tolist()
        return {owner for row in indices for owner in self.owners[row]}

    def normalised_weights(self) -> torch.Tensor:
        return self.weights / self.weights.sum()
