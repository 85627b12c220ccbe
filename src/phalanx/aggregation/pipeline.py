"""A robust aggregator: pre-aggregation steps in order, then one rule, on one stack.

All parts share the round's ``Rows``, so the Gram matrix is computed at most once however
many distance-based parts there are (NNM in front of Krum, say). Each part checks its own
tolerance against the rows it actually receives; a failing check raises AggregationError,
which the engine latches, discarding the round. The round's f is the context's when it
gives one (``effective_f``), else the configured one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from phalanx.aggregation.base import Aggregate, FollowedPart, RoundContext, check_inputs
from phalanx.aggregation.rows import Rows
from phalanx.core.rng import torch_rng
from phalanx.errors import AggregationError


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
        parts: tuple[object, ...] = (*self.steps, rule)
        for index, step in enumerate(self.steps):  # a step that must leave enough rows
            if isinstance(step, FollowedPart):
                step.follow([t for part in parts[index + 1 :] if (t := _tolerance(part))])

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, context: RoundContext | None = None
    ) -> Aggregate:
        check_inputs(updates, weights)
        context = context or RoundContext()
        if context.clients and len(context.clients) != updates.shape[0]:
            raise AggregationError(
                f"{len(context.clients)} client ids for {updates.shape[0]} updates"
            )
        f = self.f if context.f is None else context.f
        rows = Rows.of(updates, weights)
        for step in self.steps:
            rows = step(rows, f, context)
        result = self.rule(rows, f, context)
        report = rows.shared
        return Aggregate(
            self._noisy(result.vector, report.noise_std, context),
            discarded=tuple(sorted(report.discarded)),
            scaled={row: report.scaled[row] for row in sorted(report.scaled)},
            flagged=tuple(sorted(report.flagged)),
            state={**report.state, **result.state},
        )

    def min_rows(self, f: int) -> int:
        """The fewest rows every part tolerates f Byzantine ones among (a f + b for the
        strictest part; 1 when none takes f): the floor below which health feedback must not
        shrink a round's pool."""
        bounds = [1]
        for part in (*self.steps, self.rule):
            tolerance = _tolerance(part)
            if tolerance is not None:
                bounds.append(tolerance[0] * f + tolerance[1])
        return max(bounds)

    @staticmethod
    def _noisy(vector: torch.Tensor, std: float, context: RoundContext) -> torch.Tensor:
        """``vector`` plus N(0, std^2) noise drawn from (seed, round): the same noise on
        resume."""
        if std <= 0:
            return vector
        generator = torch_rng(context.seed, "aggregation.noise", context.round_index)
        return vector + std * torch.randn(vector.shape, generator=generator)


def _tolerance(part: object) -> tuple[int, int] | None:
    """A part's (a, b): it tolerates f Byzantine rows among n when n >= a f + b."""
    tolerance: tuple[int, int] | None = getattr(part, "tolerance", None)
    return tolerance
