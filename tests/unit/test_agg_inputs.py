from __future__ import annotations

import pytest
import torch

from phalanx.aggregation import RULES, STEPS, build_aggregator
from phalanx.config import AggregationConfig, StepConfig

STEP_PARAMS = {"clipping": {"mode": "static", "threshold": 1.0}}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("step", [None, *sorted(STEPS)])
def test_aggregation_never_writes_to_the_updates_or_weights(rule: str, step: str | None) -> None:
    # Some rules sort blocks in place: those must always be private copies.
    updates = torch.randn(23, 9000, generator=torch.Generator().manual_seed(3))
    weights = torch.arange(1.0, 24.0)
    before = (updates.clone(), weights.clone())
    pre = () if step is None else (StepConfig(name=step, params=STEP_PARAMS.get(step, {})),)

    build_aggregator(AggregationConfig(name=rule, f=2, pre=pre)).aggregate(updates, weights)

    assert torch.equal(updates, before[0]) and torch.equal(weights, before[1])
