from __future__ import annotations

from typing import Any

from phalanx.observability.summary import summarize


def record(round_: int, committed: bool, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "round": round_, "model_version": round_, "committed": committed, "reasons": [],
        "accepted": [0, 1, 2, 3], "accepted_attempts": [1, 1, 1, 2], "injected": [],
        "injected_counts": {}, "failures": {}, "rejections": {}, "retries": 0,
        "replacements": 0, "probes": 0, "cancelled": 0, "partial": 0, "metrics": {},
        "started_at": 0.0, "ended_at": 1.0, "discarded": [], "scaled": {},
    }  # fmt: skip
    return {**base, **fields}


def attack(client: int, attempt: int = 1) -> dict[str, Any]:
    return {"round": 0, "client": client, "attempt": attempt, "kind": "byzantine",
            "detail": "alie"}  # fmt: skip


def test_byzantine_updates_are_traced_to_aggregated_clipped_or_discarded() -> None:
    history = [
        # Round 0: client 1 attacks and is discarded, client 3 (attempt 2) attacks and is
        # clipped; honest client 2 is discarded too.
        record(0, True, injected=[attack(1), attack(3, 2)], discarded=[1, 2], scaled={"3": 0.5}),
        # Round 1 is discarded: its attack counts as sent, never as aggregated.
        record(1, False, injected=[attack(1)]),
        # Round 2: client 1's attack goes through in full.
        record(2, True, injected=[attack(1)]),
    ]
    summary = summarize(history, wall_time_s=0.0, train_time_s=0.0)
    assert summary["byzantine"] == {
        "clients": [1, 3],
        "updates_sent": 4,
        "aggregated": 1,
        "discarded": 1,
        "scaled": 1,
        "honest_discarded": 1,
    }
    assert summary["aggregator_discarded"] == {"1": 1, "2": 1}
    assert summary["aggregator_scaled"] == {"3": 1}


def test_runs_without_attacks_report_nothing_byzantine() -> None:
    summary = summarize([record(0, True)], wall_time_s=0.0, train_time_s=0.0)
    assert summary["byzantine"]["updates_sent"] == 0
    assert summary["aggregator_discarded"] == {}
