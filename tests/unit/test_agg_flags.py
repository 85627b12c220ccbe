from __future__ import annotations

import torch

from phalanx.aggregation import RoundContext, build_aggregator
from phalanx.aggregation.centered_clipping import STATE_KEY
from phalanx.config import AggregationConfig

ROWS = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.2, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def aggregate(flag: float | None, centre: list[float] | None) -> tuple[int, ...]:
    params = {} if flag is None else {"flag_alignment": flag}
    agg = build_aggregator(AggregationConfig(name="centered_clipping", f=1, params=params))
    state = {} if centre is None else {STATE_KEY: torch.tensor(centre)}
    return agg.aggregate(ROWS, torch.ones(4), RoundContext(state=state)).flagged


def test_rows_pointing_against_the_momentum_are_flagged() -> None:
    # Cosines with the centre (1, 0, 0): 1, 0.976, -1, 0.
    assert aggregate(0.0, [1.0, 0.0, 0.0]) == (2,)
    assert aggregate(0.5, [1.0, 0.0, 0.0]) == (2,)  # at most f = 1: the lowest cosine


def test_nothing_is_flagged_without_a_threshold_or_a_momentum() -> None:
    assert aggregate(None, [1.0, 0.0, 0.0]) == ()
    assert aggregate(0.0, None) == ()  # the first round starts from zero: no direction yet
