"""FoolsGold: weigh down clients whose update histories look alike (Fung, Yoon and
Beschastnikh, 2020, "The Limitations of Federated Learning in Sybil Settings", RAID).

Backdoor clients share one goal (trigger -> target), so round after round their updates
share a component that honest clients, each on its own (non-IID) data, do not: the sums of
their past updates are more alike than any two honest clients' sums. FoolsGold keeps each
client's summed updates, takes the cosine similarity between the summed updates of the
round's clients, and gives client i the weight ``1 - max_j cs_ij`` after "pardoning" (an
honest client similar to a more suspicious one has its similarity scaled by the ratio of
their maxima), rescaled so the least similar client weighs ~1 and passed through the paper's
logit (kappa = 1), clipped to [0, 1]. The more heterogeneous the honest data, the cleaner
the separation: the defence is made for the non-IID case.

The weights multiply the rows' example weights, so it goes in front of a weighted rule
(``fedavg``, ``multi_krum``, ``geometric_median``, ``centered_clipping``); a row weighted 0
is reported as discarded. Departure from the paper: the per-client sums are kept as
CountSketches of ``sketch`` buckets (a hash of every coordinate to a bucket and a sign,
fixed by the run's seed), which preserve inner products in expectation, so the state is
``clients x sketch`` floats whatever the model's size; a model no larger than ``sketch``
is kept exactly. The sums ride in the aggregator state (``RoundContext.clients`` needed;
without ids each round is judged alone).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from phalanx.aggregation.base import Part, RoundContext
from phalanx.aggregation.pre.flame import cosine_distances
from phalanx.aggregation.pre.persistent_flags import row_clients
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params
from phalanx.core.rng import torch_rng

CLIENTS_KEY = "foolsgold.clients"
HISTORY_KEY = "foolsgold.history"


class FoolsGoldParams(Params):
    sketch: int = Field(4096, ge=16, description="buckets of each client's history sketch")
    centre: bool = Field(
        True, description="sum each update minus the round's mean (only what sets it apart)"
    )


def count_sketch(x: torch.Tensor, buckets: int, seed: int) -> torch.Tensor:
    """Rows of ``x`` (m x d) as CountSketches (m x buckets, float64); the rows themselves
    when d <= buckets. Hash and signs are drawn from the seed: the same every round."""
    m, d = x.shape
    if d <= buckets:
        return x.double()
    generator = torch_rng(seed, "aggregation.foolsgold.sketch", d)
    index = torch.randint(buckets, (d,), generator=generator)
    sign = torch.randint(2, (d,), generator=generator).double() * 2 - 1
    out = torch.zeros(m, buckets, dtype=torch.float64)
    return out.index_add_(1, index, x.double() * sign)


def foolsgold_weights(history: torch.Tensor) -> torch.Tensor:
    """FoolsGold's weights (in [0, 1]) of the clients whose summed updates are ``history``."""
    n = history.shape[0]
    if n < 2:
        return torch.ones(n, dtype=torch.float64)
    similarity = 1 - cosine_distances(history @ history.T)
    similarity.fill_diagonal_(-math.inf)
    top = similarity.max(dim=1).values
    pardon = top[:, None] < top[None, :]
    ratio = top[:, None] / torch.where(top[None, :] != 0, top[None, :], 1.0)
    similarity = torch.where(pardon, similarity * ratio, similarity)
    weights = (1 - similarity.max(dim=1).values).clamp(0, 1)
    if float(weights.max()) == 0:
        return weights
    weights = (weights / weights.max()).clamp(max=0.99)
    logit = torch.log(weights / (1 - weights)) + 0.5  # log 0 = -inf: clipped to 0 below
    return logit.nan_to_num(nan=0.0, neginf=0.0).clamp(0, 1)


class FoolsGold(Part[FoolsGoldParams]):
    name = "foolsgold"

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows:
        x = rows.materialise()
        if self.params.centre:
            x = x - x.mean(dim=0)
        sketches = count_sketch(x, self.params.sketch, context.seed)
        clients = row_clients(rows, context)
        history = sketches
        if clients is not None:
            history = sketches + self._previous(context, clients, sketches.shape[1])
            rows.shared.state.update(self._carry(context, clients, history))
        weights = foolsgold_weights(history)
        rows.discard(torch.nonzero(weights == 0).flatten())
        identity = torch.eye(rows.count, dtype=torch.float64)
        return rows.remix(identity, rows.weights * weights, rows.owners)

    @staticmethod
    def _previous(context: RoundContext, clients: list[int], width: int) -> torch.Tensor:
        """Each client's summed sketch so far (0 for a client never seen)."""
        ids = context.state.get(CLIENTS_KEY, torch.zeros(0, dtype=torch.int64)).tolist()
        stored = context.state.get(HISTORY_KEY, torch.zeros(0, width, dtype=torch.float64))
        where = {int(c): i for i, c in enumerate(ids)}
        out = torch.zeros(len(clients), width, dtype=torch.float64)
        for row, client in enumerate(clients):
            if client in where and stored.shape[1] == width:
                out[row] = stored[where[client]]
        return out

    @staticmethod
    def _carry(
        context: RoundContext, clients: list[int], history: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The stored sums with this round's clients' replaced, sorted by client id."""
        ids = context.state.get(CLIENTS_KEY, torch.zeros(0, dtype=torch.int64)).tolist()
        stored = context.state.get(HISTORY_KEY)
        table = {int(c): stored[i] for i, c in enumerate(ids)} if stored is not None else {}
        table.update({c: history[row] for row, c in enumerate(clients)})
        order = sorted(table)
        return {
            CLIENTS_KEY: torch.tensor(order, dtype=torch.int64),
            HISTORY_KEY: torch.stack([table[c].double() for c in order]),
        }
