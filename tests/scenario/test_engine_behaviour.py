"""What the engine promises, shown on tiny simulated federations."""

from __future__ import annotations

import time

import pytest
import torch

from phalanx.types import HealthState
from tests.scenario.conftest import events, run, tiny_config


def schedule(*items: tuple[int, int, str]) -> str:
    body = ", ".join(f"{{round={r}, client={c}, kind='{k}'}}" for r, c, k in items)
    return f"faults.schedule=[{body}]"


def test_same_seed_same_history_and_model() -> None:
    config = tiny_config("faults.rules=[{rate=0.3}]")
    first, second = run(config), run(config)
    assert torch.equal(first.params, second.params)
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in first.history]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in second.history]


def test_faults_do_not_change_who_is_asked_or_how_they_train() -> None:
    clean = run(tiny_config("faults.enabled=false", "selection.over_selection=1.0"))
    hung = run(tiny_config(schedule((2, 0, "hang")), "selection.over_selection=1.0"))
    assert [r["dispatched"][:4] for r in clean.history] == [
        r["dispatched"][:4] for r in hung.history
    ]


def test_always_crashing_client_is_sidelined_probed_and_readmitted() -> None:
    crashes = [(r, 5, "crash") for r in range(4)]  # client 5 crashes on every attempt, rounds 0-3
    config = tiny_config(
        schedule(*crashes),
        "rounds=14",
        "selection.clients_per_round=6",
        "selection.over_selection=1.0",
        "health.cooldown_rounds=2",
    )
    result = run(config)
    crash_rounds = sorted({e["round"] for e in events(result, "crash") if e["client"] == 5})
    assert crash_rounds and crash_rounds[0] == 0
    health = [r for r in result.history]
    sidelined_at = crash_rounds[-1]
    # while sidelined it is not asked at all
    assert 5 not in health[sidelined_at + 1]["dispatched"]
    probed = [r["round"] for r in health if 5 in r["dispatched"] and r["round"] > sidelined_at]
    assert probed, "a sidelined client must be probed after its cool-down"
    assert any(r["probes"] for r in health)
    # once healthy again it is readmitted and its updates are used
    assert any(5 in r["accepted"] for r in health if r["round"] > sidelined_at)
    assert result.state.health[5].state is HealthState.HEALTHY


def test_hung_clients_never_hold_a_round_past_its_deadline() -> None:
    hangs = [(r, c, "hang") for r in range(3) for c in range(8)]  # everyone hangs
    config = tiny_config(
        schedule(*hangs), "rounds=3", "deadlines.round_s=25", "deadlines.task_s=10"
    )
    start = time.perf_counter()
    result = run(config)
    assert time.perf_counter() - start < 10  # virtual time: no real waiting
    for record in result.history:
        assert record["ended_at"] - record["started_at"] <= 25 + 1e-9
        assert not record["committed"]
        assert any("quorum" in reason for reason in record["reasons"])
    assert events(result, "timeout")


EXACT = "selection.over_selection=1.0"  # every dispatched client is awaited


def asked_in_round(round_index: int) -> list[int]:
    """Who the engine asks in a round; faults never change it (their stream is separate)."""
    return run(tiny_config("faults.enabled=false", EXACT)).history[round_index]["dispatched"]


@pytest.mark.parametrize(
    ("corruption", "reasons"),
    [
        ("noise", {"norm_relative", "norm_absolute"}),
        ("scale", {"norm_relative"}),
        ("nan", {"non_finite"}),
        ("bitflip", {"checksum"}),
    ],
)
def test_silently_corrupted_updates_are_rejected(corruption: str, reasons: set[str]) -> None:
    client = asked_in_round(1)[0]
    config = tiny_config(
        schedule((1, client, "corrupt")), f"faults.corruptions=['{corruption}']", EXACT
    )
    result = run(config)
    rejected = [e for e in events(result, "rejected") if e["client"] == client]
    assert len(rejected) == 1 and rejected[0]["reason"] in reasons, rejected
    assert client not in result.history[1]["accepted"]
    assert result.history[1]["committed"]


def test_below_quorum_the_model_is_unchanged_and_the_round_recorded() -> None:
    crashes = [(2, c, "crash") for c in range(8)]
    config = tiny_config(schedule(*crashes), "rounds=3", "retry.max_attempts=1")
    result = run(config)
    failed = result.history[2]
    assert not failed["committed"]
    assert failed["model_version"] == result.history[1]["model_version"]
    assert "quorum not met" in failed["reasons"][0]
    reference = run(tiny_config("rounds=2", "faults.enabled=false"))
    # round 2 discarded: the final model is exactly the model after round 1
    assert torch.equal(result.params, reference.params)


def test_replacement_keeps_the_round_at_its_target() -> None:
    first = asked_in_round(0)[:2]
    crashing = tiny_config(
        schedule(*[(0, c, "crash") for c in first]), EXACT, "retry.max_attempts=1"
    )
    result = run(crashing)
    record = result.history[0]
    assert record["replacements"] == 2
    assert len(record["accepted"]) == 4  # the target, despite two clients lost for good
    assert not set(first) & set(record["accepted"])


def test_transient_crash_is_retried_and_then_accepted() -> None:
    client = asked_in_round(0)[0]
    result = run(
        tiny_config(
            f"faults.schedule=[{{round=0, client={client}, kind='crash', attempt=1}}]", EXACT
        )
    )
    record = result.history[0]
    assert record["retries"] == 1
    index = record["accepted"].index(client)
    assert record["accepted_attempts"][index] == 2


def test_straggler_partial_work_is_accepted_and_weighted() -> None:
    client = asked_in_round(0)[0]
    straggle = schedule((0, client, "straggle"))
    common = [EXACT, "latency.straggle_factor=30", "training.local_epochs=4"]
    dropped = run(tiny_config(straggle, *common))
    assert client not in dropped.history[0]["accepted"]
    partial = run(tiny_config(straggle, *common, "partial_work.enabled=true"))
    assert client in partial.history[0]["accepted"]
    assert partial.history[0]["partial"] >= 1
