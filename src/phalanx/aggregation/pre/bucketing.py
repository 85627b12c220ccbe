"""Bucketing (Karimireddy, He and Jaggi, 2022, "Byzantine-Robust Learning on Heterogeneous
Datasets via Bucketing", ICLR).

Shuffle the rows, cut them into buckets of ``size``, and hand the rule the buckets' means:
averaging shrinks the honest rows' heterogeneity that Byzantine rows hide in. The shuffle is
drawn from (seed, round), so a resumed run buckets exactly as before. A bucket's weight is
its members' total; a rule that discards a bucket discards all of its members.

Each Byzantine row can spoil one bucket, so the parts after bucketing must still tolerate f
among the buckets. A round with few rows (failures, validation's refusals) gets smaller
buckets, down to one row each, rather than fewer buckets than those parts need: with
``size`` fixed, 20 clients, f = 4 and centred clipping (2f + 1 = 9 rows) lose every round
once validation refuses three of them. The pipeline tells the step what follows it
(``follow``); the health floor (``Pipeline.min_rows``) stays right because buckets of one
row are the rows themselves.
"""

from __future__ import annotations

import torch
from pydantic import Field

from phalanx.aggregation.base import FollowedPart, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params
from phalanx.core.rng import torch_rng


class BucketingParams(Params):
    size: int = Field(2, ge=1, description="rows averaged per bucket")


def bucket_matrix(order: list[int], size: int, n: int) -> torch.Tensor:
    """Row b of the result averages the rows ``order[b*size : (b+1)*size]``."""
    buckets = [order[start : start + size] for start in range(0, n, size)]
    matrix = torch.zeros(len(buckets), n, dtype=torch.float64)
    for row, members in enumerate(buckets):
        matrix[row, members] = 1.0 / len(members)
    return matrix


class Bucketing(FollowedPart[BucketingParams]):
    name = "bucketing"

    def size_for(self, n: int, f: int) -> int:
        """The bucket size for ``n`` rows: ``size``, or less so that the parts after this
        one get at least the a f + b buckets they need (never below one row a bucket)."""
        need = self.rows_needed(f)
        size = self.params.size
        while size > 1 and -(-n // size) < need:  # ceil(n / size) buckets, the last partial
            size -= 1
        return size

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        n = rows.count
        size = self.size_for(n, f)
        if size == 1:
            return rows
        generator = torch_rng(context.seed, "aggregation.bucketing", context.round_index)
        order = torch.randperm(n, generator=generator).tolist()
        matrix = bucket_matrix(order, size, n)
        members = matrix > 0
        weights = (members.double() * rows.weights).sum(dim=1)
        owners = tuple(
            tuple(sorted(o for j in torch.nonzero(row).flatten().tolist() for o in rows.owners[j]))
            for row in members
        )
        return rows.remix(matrix, weights, owners)
