"""The example-weighted mean as a rule at the end of a pipeline, e.g. behind clipping.
(Alone, ``fedavg`` is the streaming ``FedAvg``, which never holds the stack.)"""

from __future__ import annotations

from phalanx.aggregation.base import Aggregate, Part, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class Mean(Part[Params]):
    name = "fedavg"

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        return Aggregate(rows.combine(rows.normalised_weights()))
