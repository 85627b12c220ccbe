"""A robust aggregator: pre-aggregation steps in order, then one rule, on one stack.

All parts share the round's ``Rows``, so the Gram matrix is computed at most once however
many distance-based parts there are (NNM in front of Krum, say). Each part checks its own
tolerance against the rows it actually receives; a failing check raises AggregationError,
which the engine latches, discarding the round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from phalanx.aggregation.base import Aggregate, RoundContext, check_inputs
from phalanx.aggregation.rows import Rows


class Rule(Protocol):
    name: str

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Aggregate: ...


class Step(Protocol):
    name: str

    def __call__(self, rows: Rows, f: int, context: RoundContext) -> Rows: ...


class Pipeline:
    """``steps`` then ``rule``, tolerating ``f`` Byzantine rows; named like
    "nnm > trimmed_mean"."""

    def __init__(self, rule: Rule, *, f: int, steps: Sequence[Step] = ()) -> None:
        self.rule = rule
        self.steps = tuple(steps)
        self.f = f
        self.name = " > ".join([*(step.name for step in self.steps), rule.name])

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, context: RoundContext | None = None
    ) -> Aggregate:
        check_inputs(updates, weights)
        context = context or RoundContext()
        rows = Rows.of(updates, weights)
        for step in self.steps:
            rows = step(rows, self.f, context)
        result = self.rule(rows, self.f, context)
        report = rows.shared
        return Aggregate(
            result.vector,
            discarded=tuple(sorted(report.discarded)),
            scaled={row: report.scaled[row] for row in sorted(report.scaled)},
            flagged=tuple(sorted(report.flagged)),
            state=result.state,
        )
