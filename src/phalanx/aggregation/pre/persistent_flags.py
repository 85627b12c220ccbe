"""Flags judged over rounds against the population, not round by round against the server
momentum: a client is flagged only when its alignment with the other updates stays below
the population's, round after round (Page's CUSUM, "Continuous Inspection Schemes",
Biometrika 1954).

Why: one round's low alignment is what an honest client on unusual (non-IID) data shows
now and then, and a reference the attackers can steer (the server momentum, at 30%) makes
the honest clients look like the outliers. Here the reference is the population itself:
row i's alignment is taken against the other rows (from the round's Gram matrix;
``reference`` below says how), honest as long as f < n/2; its shortfall is the round's
median alignment minus its own. Per client, ``S <- max(0, S + shortfall - drift)``: a
client no worse than the population drifts back to 0, a persistent outlier accumulates. A
row is flagged when its client's S passes ``threshold`` and its alignment this round is
below ``max_cosine`` (it points away from the others now), at most the f with the largest
S: health feedback can never be asked to sideline more clients a round than the rule
tolerates. Clients whose update validation refused this round on the relative-norm bound
(``RoundContext.refused``) come off that count: f keeps counting them for the rule, but
the Byzantine rows left to flag are at most f less those refused, and when every attacker
of a round is refused (the scaling attack) the rows left are honest, so whatever the step
would flag in their place is a false flag (found in the fourth tuning,
docs/byzantine_tuning.md).

What a row's alignment is (``reference``): ``rows``, its median cosine with the other rows
(the first default); ``sum``, its cosine with their sum; ``crowd`` (the shipped default,
fifth tuning in docs/byzantine_tuning.md), its cosine with the sum of their directions,
rows within ``crowd_cosine`` of each other counted once. Why: an update is mostly its
client's own part and little of the round's common direction, so pairwise cosines are all
near 0 and a sign flipper looks like any honest client for the first dozen rounds, while
in a sum the own parts cancel and the common direction adds up. A plain sum can be
steered (IPM at 30%, six rows at -5 times the honest mean, outweighs fourteen honest ones);
as unit vectors no row weighs more than another, and colluders sending one update count
as one row. Colluders who send distinct updates still count one each: against them the
reference holds while the honest rows' common direction outweighs their number.

With ``relative``, the shortfall is counted in units of the round's spread of alignments
(1.4826 x their median absolute deviation, at least ``min_spread``): a robust z-score.
Why: on very non-IID data an honest client holding one or two classes sits below the
population's alignment round after round, as far below as the spread of honest alignments
itself; counted in absolute cosine it accumulates like an attacker's, counted against that
spread it accumulates only when it stands out of a heterogeneous population as far as a
colluding attacker stands out of a homogeneous one. ``drift`` and ``threshold`` are then in
spreads.

With ``ceiling``, S is kept at most that high between rounds (the flags of the round are
judged before the cap). Why: a flagged client is sidelined, sends nothing, and its S stays
where the flag left it; uncapped, an S that piled up far past ``threshold`` flags the
client's probe whatever the probe's update is, and each flagged probe doubles the
cool-down. Capped at ``threshold``, a probe is flagged only when it falls short of the
population by more than ``drift`` again: an attacker still pushing away is, an honest
client whose shortfall was a spell is not. Off by default: in the sixth tuning
(docs/byzantine_tuning.md) it cut honest losses but let sign flippers back as much.

The step does not change the rows. The per-client statistics ride in the aggregator state
(client ids and S, only those above 0), carried to the next committed round; it needs
``RoundContext.clients`` for that, and without ids judges each round alone.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from phalanx.aggregation.base import Part, RoundContext
from phalanx.aggregation.pre.flame import cosine_distances
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params

CLIENTS_KEY = "persistent_flags.clients"
SCORES_KEY = "persistent_flags.cusum"


class PersistentFlagsParams(Params):
    drift: float = Field(
        0.05, ge=0, description="shortfall below the median alignment tolerated each round"
    )
    threshold: float = Field(
        1.0, gt=0, description="flag once a client's accumulated shortfall passes this"
    )
    max_cosine: float = Field(
        0.0, ge=-1, le=1, description="flag only rows whose alignment this round is below this"
    )
    relative: bool = Field(
        False, description="count the shortfall in spreads of the round's alignments (z-score)"
    )
    min_spread: float = Field(
        0.05, gt=0, description="with relative: the smallest spread a shortfall is divided by"
    )
    reference: Literal["rows", "sum", "crowd"] = Field(
        "rows",
        description="a row's alignment: its median cosine with the other rows (rows), its "
        "cosine with their sum (sum), or with the sum of their directions, rows within "
        "crowd_cosine of each other counted once (crowd)",
    )
    crowd_cosine: float = Field(
        0.9, gt=0, le=1, description="with crowd: rows at least this close count as one"
    )
    leave_out_crowd: bool = Field(
        False, description="with crowd: leave a row's crowd, not only itself, out of its reference"
    )
    ceiling: float | None = Field(
        None,
        gt=0,
        description="the most S keeps between rounds (flags are judged before the cap); "
        "null: no cap",
    )

    @model_validator(mode="after")
    def _crowd_options_need_the_crowd(self) -> PersistentFlagsParams:
        if self.leave_out_crowd and self.reference != "crowd":
            raise ValueError(
                f"leave_out_crowd needs reference = 'crowd' (got reference = '{self.reference}')"
            )
        return self


def median_alignment(gram: torch.Tensor) -> torch.Tensor:
    """Per row, the (lower) median cosine with the other rows; 0 for a lone row."""
    n = gram.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.float64)
    cosines = 1 - cosine_distances(gram)
    cosines.fill_diagonal_(float("nan"))
    return cosines.nanmedian(dim=1).values


def _with_weighted_others(gram: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per row i, the cosine between it and ``sum_{j != i} weights_j x_j``, from the rows'
    Gram matrix; 0 where either side is zero."""
    pulls = gram @ weights
    own = gram.diagonal()
    with_others = pulls - weights * own
    others_sq = (weights @ pulls - 2 * weights * pulls + weights.square() * own).clamp(min=0)
    scale = (own.clamp(min=0) * others_sq).sqrt()
    return torch.where(scale > 0, with_others / scale.clamp(min=1e-300), torch.zeros_like(scale))


def sum_alignment(gram: torch.Tensor) -> torch.Tensor:
    """Per row, the cosine between it and the sum of the other rows; 0 for a lone row or a
    zero row.

    Why beside ``median_alignment``: a round's updates share a small common direction under
    a large part of their own (on the digits MLP at Dirichlet 0.5, honest rows' median
    pairwise cosine is 0.0-0.05, as low as a sign flipper's for the first 15 rounds). Summed,
    the other rows' own parts cancel and the common direction adds up, so a row's cosine with
    the sum sees which way it pushes the model: on the same runs, sign flippers sit at -0.4
    to -0.6 from round 8, honest rows at -0.3 to 0.7."""
    n = gram.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.float64)
    return _with_weighted_others(gram, torch.ones(n, dtype=gram.dtype))


def crowd_alignment(
    gram: torch.Tensor, crowd_cosine: float, *, leave_out_crowd: bool = False
) -> torch.Tensor:
    """Per row, the cosine between it and the sum of the other rows' directions (unit
    vectors), each weighted by one over the number of rows within ``crowd_cosine`` of it,
    itself included; 0 for a lone row or a zero row.

    Why not ``sum_alignment`` alone: a sum can be steered. Six IPM rows at 30% (each -5 times
    the honest mean) outweigh fourteen honest rows whose common part is small, and the sum
    then points their way. As unit vectors no row weighs more than another, and colluders
    sending one update (IPM, ALIE, min-max, mimic) are one crowd that counts as one row:
    the reference follows the honest majority's common direction, and a row pushing against
    it (a sign flipper, a colluder) stands out.

    With ``leave_out_crowd``, a row's reference leaves out its own crowd (the rows within
    ``crowd_cosine`` of it), not only itself. Why: counted once, a crowd of c colluders still
    puts (c - 1) / c of a unit vector along its own direction into each member's reference,
    and on a model whose honest rows share little that lifts the colluders' alignment toward
    the honest rows'. Honest rows are crowds of one, so theirs is unchanged."""
    n = gram.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.float64)
    cosines = 1 - cosine_distances(gram)  # the unit vectors' Gram matrix; a zero row's is 0
    crowd = (cosines >= crowd_cosine).sum(dim=1)  # itself included: never 0
    weights = (gram.diagonal() > 0).to(gram.dtype) / crowd  # a zero row adds nothing
    alignment = _with_weighted_others(cosines, weights)
    if not leave_out_crowd:
        return alignment
    crowded = (crowd > 1).nonzero().flatten()
    if len(crowded):
        alignment[crowded] = _apart_from_crowd(cosines, weights, crowded, crowd_cosine)
    return alignment


def _apart_from_crowd(
    cosines: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, crowd_cosine: float
) -> torch.Tensor:
    """For each of ``rows``, the cosine between it and ``sum_j weights_j u_j`` over the rows j
    outside its crowd (``cosines`` is the unit vectors' Gram matrix); 0 where that sum or the
    row is zero. Only crowded rows come here, so the cost is rows x n^2, not n^3."""
    apart = (cosines[rows] < crowd_cosine).to(cosines.dtype) * weights  # rows x n
    towards = (apart * cosines[rows]).sum(dim=1)
    reference_sq = ((apart @ cosines) * apart).sum(dim=1).clamp(min=0)
    scale = (cosines[rows, rows].clamp(min=0) * reference_sq).sqrt()
    return torch.where(scale > 0, towards / scale.clamp(min=1e-300), torch.zeros_like(scale))


def spread(alignment: torch.Tensor, floor: float) -> float:
    """1.4826 x the median absolute deviation of ``alignment`` (the standard deviation, for
    a normal population, that a minority of outliers cannot inflate), at least ``floor``."""
    deviation = (alignment - alignment.median()).abs().median()
    return max(1.4826 * float(deviation), floor)


def cusum(previous: torch.Tensor, shortfall: torch.Tensor, drift: float) -> torch.Tensor:
    """One step of the one-sided CUSUM: ``max(0, S + shortfall - drift)``."""
    return (previous + shortfall - drift).clamp(min=0)


def carried(context: RoundContext) -> dict[int, float]:
    """Client id -> S, as the last committed round left it."""
    ids = context.state.get(CLIENTS_KEY, torch.zeros(0)).tolist()
    scores = context.state.get(SCORES_KEY, torch.zeros(0)).tolist()
    return {int(c): float(s) for c, s in zip(ids, scores, strict=True)}


def table_state(table: dict[int, float]) -> dict[str, torch.Tensor]:
    """The table as state tensors, sorted by client id, clients at 0 dropped."""
    ids = sorted(c for c, s in table.items() if s > 0)
    return {
        CLIENTS_KEY: torch.tensor(ids, dtype=torch.int64),
        SCORES_KEY: torch.tensor([table[c] for c in ids], dtype=torch.float64),
    }


def row_clients(rows: Rows, context: RoundContext) -> list[int] | None:
    """The client behind each current row, or None when some row speaks for several
    (after bucketing) or the context names no clients."""
    if not context.clients or any(len(owners) != 1 for owners in rows.owners):
        return None
    return [context.clients[owners[0]] for owners in rows.owners]


class PersistentFlags(Part[PersistentFlagsParams]):
    name = "persistent_flags"

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        p = self.params
        gram = rows.gram()
        if p.reference == "rows":
            alignment = median_alignment(gram)
        elif p.reference == "sum":
            alignment = sum_alignment(gram)
        else:
            alignment = crowd_alignment(gram, p.crowd_cosine, leave_out_crowd=p.leave_out_crowd)
        shortfall = alignment.median() - alignment
        if p.relative:
            shortfall = shortfall / spread(alignment, p.min_spread)
        clients = row_clients(rows, context)
        table = carried(context)
        start = [table.get(c, 0.0) for c in clients] if clients else [0.0] * rows.count
        scores = cusum(torch.tensor(start, dtype=torch.float64), shortfall, p.drift)
        if clients is not None:
            kept = scores if p.ceiling is None else scores.clamp(max=p.ceiling)
            table.update(zip(clients, kept.tolist(), strict=True))
            rows.shared.state.update(table_state(table))
        suspects = (scores > p.threshold) & (alignment < p.max_cosine)
        order = torch.sort(-scores, stable=True).indices[: max(f - context.refused, 0)]
        rows.flag(order[suspects[order]])
        return rows
