"""Centred clipping with server momentum (Karimireddy, He and Jaggi, 2021, "Learning from
History for Byzantine Robust Optimization", ICML).

Start from the last committed round's aggregate (the momentum the paper keeps on the
server), then ``iterations`` times move the centre by the weighted mean of the rows'
differences to it, each clipped to norm ``tau``: a Byzantine row moves the result by at
most tau x its weight share. ``tau`` None picks the median distance to the centre (times
``tau_scale``), so the radius follows the scale of honest updates. The centre is carried to
the next round as state; rows clipped in the last iteration are reported as scaled. With
``flag_alignment``, rows pointing against the starting centre are flagged for the health
monitor (``aggregation.health_feedback``), which sidelines clients flagged again and again.
"""

from __future__ import annotations

import torch
from pydantic import Field

from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params

STATE_KEY = "centered_clipping.centre"


class CenteredClippingParams(Params):
    tau: float | None = Field(None, gt=0, description="clipping radius; null: the median distance")
    # With tau null, the radius is this multiple of the median distance: at 1 half the rows
    # are clipped every round, the honest ones on unusual (non-IID) data among them.
    tau_scale: float = Field(1.0, gt=0, description="with tau null: radius / median distance")
    iterations: int = Field(1, ge=1, description="clipping iterations per round")
    momentum: bool = Field(True, description="start from the last round's aggregate (else zero)")
    # Flag rows whose cosine with the starting centre is below this, at most the f lowest:
    # with momentum, an update that points against the run's recent direction, round after
    # round, is the mark of sign flipping and inner-product manipulation, while an honest
    # client on unusual data does so now and then. None: flag nothing.
    flag_alignment: float | None = Field(
        None, ge=-1, le=1, description="flag the f least aligned rows below this cosine; null: none"
    )


class CenteredClipping(Part[CenteredClippingParams]):
    name = "centered_clipping"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        n = rows.count
        self.require_tolerance(n, f)
        centre = self._start(rows.dim, context)
        share = rows.normalised_weights()
        factors = torch.ones(n, dtype=torch.float64)
        self._flag_opposed(rows, centre, f)
        for _ in range(self.params.iterations):
            distances = rows.sq_distances_to(centre).sqrt()
            tau = self.params.tau or self.params.tau_scale * float(distances.median())
            factors = torch.where(distances > tau, tau / distances.clamp(min=1e-300), 1.0)
            coefficients = share * factors
            centre = centre + rows.combine(coefficients) - float(coefficients.sum()) * centre
        rows.note_scaled(factors)
        return Aggregate(centre, state={STATE_KEY: centre.clone()})

    def _flag_opposed(self, rows: Rows, centre: torch.Tensor, f: int) -> None:
        threshold = self.params.flag_alignment
        centre_norm = float(centre.double().norm())
        if threshold is None or centre_norm == 0 or f == 0:
            return
        norms = rows.sq_norms().sqrt().clamp(min=1e-300)
        cosines = rows.dot(centre) / (norms * centre_norm)
        lowest = torch.sort(cosines, stable=True).indices[:f]
        rows.flag(lowest[cosines[lowest] < threshold])

    def _start(self, dim: int, context: RoundContext) -> torch.Tensor:
        previous = context.state.get(STATE_KEY) if self.params.momentum else None
        if previous is None or previous.shape != (dim,):
            return torch.zeros(dim)
        return previous.float()
