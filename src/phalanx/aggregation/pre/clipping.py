"""Norm clipping in front of any rule: static, or adaptive (ARC: Allouah et al., 2024,
"Boosting Robustness by Clipping Gradients in Distributed Learning", AISTATS).

Static clipping scales every row longer than ``threshold`` down to it. Adaptive robust
clipping needs no threshold: it clips the k = floor(2 (f/n) (n - f)) longest rows to the
length of the longest row left unclipped, so the f rows a Byzantine client controls cannot
stand out by length. Both only rescale rows; clipped rows are reported as scaled.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from phalanx.aggregation.base import Part, RoundContext, require
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class ClippingParams(Params):
    mode: Literal["static", "adaptive"] = Field(
        "adaptive", description="static: clip to threshold; adaptive: ARC, from n and f"
    )
    threshold: float | None = Field(None, gt=0, description="static mode's norm bound")

    @model_validator(mode="after")
    def _threshold_for_static(self) -> ClippingParams:
        if self.mode == "static" and self.threshold is None:
            raise ValueError("static clipping needs a threshold")
        if self.mode == "adaptive" and self.threshold is not None:
            raise ValueError("adaptive clipping sets its own threshold; remove threshold")
        return self


def arc_threshold(norms: torch.Tensor, f: int) -> float:
    """The norm of the (k+1)-th longest row, k = floor(2 (f/n) (n - f)); inf when k = 0."""
    n = norms.shape[0]
    k = math.floor(2 * (f / n) * (n - f))
    if k == 0:
        return math.inf
    return float(torch.sort(norms, descending=True).values[min(k, n - 1)])


class Clipping(Part[ClippingParams]):
    name = "clipping"

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        n = rows.count
        norms = rows.sq_norms().sqrt()
        if self.params.mode == "adaptive":
            require("adaptive clipping", n=n, f=f)
            threshold = arc_threshold(norms, f)
        else:
            threshold = float(self.params.threshold or math.inf)
        factors = torch.where(norms > threshold, threshold / norms.clamp(min=1e-300), 1.0)
        if bool((factors == 1).all()):
            return rows
        rows.note_scaled(factors)
        return rows.remix(torch.diag(factors), rows.weights, rows.owners)
