"""The server's public aggregation setup as a colluding attacker sees it (``AggregationView``),
built from the run's config: the rule and its steps as the engine builds them, f, and the
validation norm bounds.

Kept apart from ``attacks`` so the attack API itself does not import the aggregation
package: a runtime builds the view once per round and hands it to ``RoundView``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from phalanx.aggregation import RoundContext, build_aggregator
from phalanx.config import AggregationConfig, ValidationConfig
from phalanx.errors import AggregationError
from phalanx.faults.attacks import AggregationView


def aggregation_view(
    aggregation: AggregationConfig,
    validation: ValidationConfig,
    *,
    seed: int = 0,
    round_index: int = 0,
    state: Mapping[str, torch.Tensor] | None = None,
) -> AggregationView:
    """The view of ``aggregation`` behind ``validation``. Its ``aggregate`` runs the real
    pipeline with unit weights and the round's context (``state``: the aggregator state the
    server carries, e.g. centred clipping's centre, when the attacker knows it); a stack the
    rule refuses (too few rows for f) aggregates to the plain mean, the server's fallback
    being to discard the round, which moves the model by nothing worse."""
    aggregator = build_aggregator(aggregation)
    context = RoundContext(seed, round_index, dict(state or {}))

    def aggregate(stack: torch.Tensor) -> torch.Tensor:
        try:
            return aggregator.aggregate(stack, torch.ones(stack.shape[0]), context).vector
        except AggregationError:
            return stack.mean(dim=0)

    return AggregationView(
        rule=aggregation.name,
        f=aggregation.f,
        max_norm=validation.max_norm,
        max_relative_norm=validation.max_relative_norm,
        aggregate=aggregate,
    )
