"""The fault plan is data: deterministic per (round, client, attempt), counted when fired."""

from __future__ import annotations

import torch

from phalanx.config import FaultConfig, FaultRule, ScheduledFault
from phalanx.core.messages import TaskKey
from phalanx.faults import FaultPlan, corrupt_tensors, flip_bits
from phalanx.types import Corruption, FaultKind


def decisions(plan: FaultPlan, rounds: int = 200, clients: int = 10) -> list[FaultKind | None]:
    out = []
    for r in range(rounds):
        for c in range(clients):
            decision = plan.decide(TaskKey(r, c, 1))
            out.append(decision.kind if decision else None)
    return out


def test_rates_are_honoured_per_client_group() -> None:
    config = FaultConfig(
        rules=(FaultRule(clients=(0, 1, 2, 3, 4), rate=0.4), FaultRule(rate=0.1)),
    )
    plan = FaultPlan(config, seed=1)
    draws = decisions(plan)
    first = [d for i, d in enumerate(draws) if i % 10 < 5]
    second = [d for i, d in enumerate(draws) if i % 10 >= 5]
    assert 0.33 < sum(d is not None for d in first) / len(first) < 0.47
    assert 0.06 < sum(d is not None for d in second) / len(second) < 0.14
    kinds = {d for d in draws if d is not None}
    assert kinds == {FaultKind.CRASH, FaultKind.HANG, FaultKind.CORRUPT}


def test_same_key_same_decision_and_disabled_means_none() -> None:
    config = FaultConfig(rules=(FaultRule(rate=0.5),))
    assert decisions(FaultPlan(config, seed=3)) == decisions(FaultPlan(config, seed=3))
    assert decisions(FaultPlan(config, seed=3)) != decisions(FaultPlan(config, seed=4))
    off = FaultConfig(enabled=False, rules=(FaultRule(rate=1.0),))
    assert set(decisions(FaultPlan(off, seed=3))) == {None}


def test_schedule_fires_exactly_and_wins_over_rules() -> None:
    config = FaultConfig(
        rules=(FaultRule(rate=0.0),),
        schedule=(
            ScheduledFault(round=2, client=7, kind=FaultKind.DROP),
            ScheduledFault(round=3, client=1, kind=FaultKind.CRASH, attempt=2),
        ),
    )
    plan = FaultPlan(config, seed=0)
    hits = {
        (r, c, a): d.kind
        for r in range(5)
        for c in range(10)
        for a in (1, 2, 3)
        if (d := plan.decide(TaskKey(r, c, a)))
    }
    assert hits == {
        (2, 7, 1): FaultKind.DROP,
        (2, 7, 2): FaultKind.DROP,
        (2, 7, 3): FaultKind.DROP,
        (3, 1, 2): FaultKind.CRASH,
    }


def test_the_plan_counts_what_fired_by_round() -> None:
    plan = FaultPlan(
        FaultConfig(schedule=(ScheduledFault(round=1, client=2, kind="hang"),)), seed=0
    )
    key = TaskKey(1, 2, 1)
    decision = plan.decide(key)
    assert decision is not None
    plan.record(key, decision)
    assert plan.counts == {"hang": 1}
    assert plan.fired(1) == [{"round": 1, "client": 2, "attempt": 1, "kind": "hang", "detail": ""}]
    assert plan.fired(0) == []


def test_corruptions() -> None:
    update = {"w": torch.ones(2, 2)}
    reference = {"w": torch.zeros(2, 2)}
    gen = torch.Generator().manual_seed(0)

    def damage(kind: Corruption) -> torch.Tensor:
        return corrupt_tensors(update, reference, kind, generator=gen, noise_std=1.0, scale=-10.0)[
            "w"
        ]

    assert torch.isnan(damage(Corruption.NAN)).sum() == 1
    assert torch.equal(damage(Corruption.SCALE), torch.full((2, 2), -10.0))
    assert not torch.equal(damage(Corruption.NOISE), update["w"])
    flipped = flip_bits(update, generator=gen, count=3)["w"]
    assert not torch.equal(flipped, update["w"])
    assert torch.equal(update["w"], torch.ones(2, 2))  # the original is untouched
