"""The example-weighted mean as a rule at the end of a pipeline, e.g. behind clipping.
(Alone, ``fedavg`` is the streaming ``FedAvg``, which never holds the stack.)"""

from __future__ import annotations

from phalanx.aggregation.base import Aggregate, RoundContext
from phalanx.aggregation.rows import Rows
from phalanx.core.named import Params


class MeanParams(Params):
    pass


class Mean:
    name = "fedavg"

    def __init__(self, params: MeanParams) -> None:
        self.params = params

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate:
        return Aggregate(rows.combine(rows.normalised_weights()))
