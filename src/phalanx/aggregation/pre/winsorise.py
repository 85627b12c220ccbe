"""Coordinate-wise winsorising in front of any rule: per coordinate, the ``trim`` largest
and ``trim`` smallest values (default f each side) are pulled in to the nearest value left.

Why: a backdoor lives where honest clients do not push. A pixel trigger sits on inputs that
clean data leaves near zero, so honest updates barely move the weights that read it, while
every backdoor client moves them the same way, round after round. Whole-update rules
(centred clipping, Krum) judge rows by norm and direction and let each such row in at its
weight share, and the backdoor accumulates; per coordinate, the f colluders are the f
extreme values, and winsorising leaves them no further out than the most extreme honest
value. This is the coordinate-wise trimming of Yin et al. (2018, "Byzantine-Robust
Distributed Learning: Towards Optimal Statistical Rates", ICML) with clamping (Tukey's
winsorising) in place of dropping, so the rows stay whole for the row-wise rule behind it;
the per-coordinate view of a backdoor is that of Ozdayi, Kantarcioglu and Gel (2021,
"Defending against Backdoors in Federated Learning with Robust Learning Rate", AAAI), who
count sign agreement per coordinate.

Rare honest signals are extremes too: on very non-IID data (Dirichlet 0.1) the one or two
clients that hold a class are the only ones pushing its output weights up, against the
rest, and clamping them costs about 7 points of clean accuracy on digits. ``consensus``
spares such coordinates: one is clamped only where the rows' median lies within
``consensus`` x the spread between the two bounds of zero -- where the bulk of the clients
is indifferent, as it is on a trigger's weights, rather than agreed on a direction (the
distinction Ozdayi et al. draw with sign agreement). Chosen on tuning seeds:
docs/byzantine_tuning.md.

The step replaces the rows (``Rows.replaced``): it is not a mix of them, so the Gram matrix
is recomputed for the parts behind it. Put judging steps (``persistent_flags``) in front, so
they see what clients sent. Unweighted, as the trimmed mean; nothing is reported (every row
keeps its say, on every coordinate).
"""

from __future__ import annotations

from pydantic import Field

from phalanx.aggregation.base import Part, RoundContext
from phalanx.aggregation.coordinatewise import winsorised
from phalanx.aggregation.rows import Rows
from phalanx.aggregation.trimmed_mean import checked_trim
from phalanx.core.named import Params


class WinsoriseParams(Params):
    trim: int | None = Field(
        None, ge=0, description="values pulled in at each end, per coordinate (>= f); null: f"
    )
    consensus: float | None = Field(
        None, ge=0, description="clamp only where |median| <= this x the spread; null: all"
    )
    # Why: with the attackers all at one end of a coordinate (sign flipping), trimming f at
    # each end also clips the f honest values at the other, and the result leans toward the
    # attackers; bounds moved out leave honest tails within reach alone while a backdoor's
    # values, far beyond an indifferent bulk, are still pulled in.
    widen: float = Field(
        1.0, ge=1, description="bounds moved from the median to this x their distance"
    )
    # Why: a trigger's weights are ones honest clients barely move (clean data leaves those
    # pixels near zero), while a rare class's or an attacked coordinate's honest values
    # spread wide; clamping only the quiet coordinates spares the latter.
    quiet: float | None = Field(
        None, gt=0, description="clamp only where the spread is <= this x the median spread"
    )
    one_sided: bool = Field(
        False, description="clamp each coordinate at the end whose extremes lie further out"
    )


class Winsorise(Part[WinsoriseParams]):
    name = "winsorise"
    tolerance = (2, 1)

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        trim = checked_trim(self, self.params.trim, n=rows.count, f=f)
        if trim == 0:
            return rows
        p = self.params
        return rows.replaced(
            winsorised(
                rows.materialise(),
                trim,
                consensus=p.consensus,
                widen=p.widen,
                one_sided=p.one_sided,
                quiet=p.quiet,
            )
        )
