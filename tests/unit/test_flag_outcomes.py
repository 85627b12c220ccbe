"""The false-flag rate a run reports (``summary.json`` ``flags``), on a literal history."""

from __future__ import annotations

from typing import Any

from phalanx.observability.flags import flag_outcomes
from phalanx.observability.summary import summarize


def record(round_: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "round": round_, "committed": True, "dispatched": [0, 1, 2, 3], "accepted": [0, 1, 2, 3],
        "injected": [{"client": 3, "attempt": 1, "kind": "byzantine", "detail": "alie"}],
        "flagged": [],
    }  # fmt: skip
    return {**base, **fields}


HISTORY = [
    record(0, flagged=[1, 3], flag_sidelined=[1, 3]),
    record(1, dispatched=[0, 2], accepted=[0, 2], injected=[]),  # 1 and 3 sidelined
    record(2, dispatched=[0, 2], accepted=[0, 2], injected=[], flagged=[2]),
    record(3, committed=False, dispatched=[0, 2], flagged=[0]),  # a discarded round: no flags
    record(4, dispatched=[0, 1, 2, 3]),
]


def test_honest_flags_and_the_rounds_they_cost_are_counted() -> None:
    assert flag_outcomes(HISTORY) == {
        "honest_flagged": 2,  # client 1 in round 0, client 2 in round 2
        "byzantine_flagged": 1,
        "honest_aggregated": 3 + 2 + 2 + 3,  # committed rounds, client 3 excluded
        "honest_flag_rate": 2 / 10,
        "honest_sidelined": 1,  # client 3's sidelining is not an honest one
        "honest_rounds_lost": 3,  # client 1: rounds 1, 2 and 3 (asked again in 4)
        "honest_rounds_lost_share": 3 / (3 * 5),
    }


def test_a_run_without_flags_reports_zeros_and_the_summary_carries_them() -> None:
    clean = [record(0, injected=[])]
    flags = flag_outcomes(clean)
    assert flags["honest_flagged"] == flags["honest_rounds_lost"] == 0
    assert flags["honest_flag_rate"] == 0.0 and flags["honest_rounds_lost_share"] == 0.0
    assert flag_outcomes([])["honest_flag_rate"] is None
    full = {**record(0, injected=[]), "model_version": 1, "reasons": [], "accepted_attempts":
            [1, 1, 1, 1], "injected_counts": {}, "failures": {}, "rejections": {}, "retries": 0,
            "replacements": 0, "probes": 0, "cancelled": 0, "partial": 0, "metrics": {},
            "started_at": 0.0, "ended_at": 1.0, "discarded": [], "scaled": {}}  # fmt: skip
    assert summarize([full], wall_time_s=0.0, train_time_s=0.0)["flags"] == flags
