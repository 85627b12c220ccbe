"""The fault plot's series: every accepted update's fate, Byzantine or honest; failures and
rejections; flagged and sidelined counts; long runs binned. And what each plot's title says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phalanx.engine.history import RoundEvent, RoundRecord
from phalanx.observability.plots import (
    _accuracy_title,
    _bin,
    _watch_series,
    plot_accuracy,
    plot_faults,
    task_layers,
)
from phalanx.types import FailureKind, RejectReason


def _byzantine(client: int, attempt: int = 1) -> dict[str, Any]:
    return {"round": 0, "client": client, "attempt": attempt, "kind": "byzantine", "detail": ""}


def _robust_round(round_: int) -> dict[str, Any]:
    """Five accepted: 0 and 1 honest (1 clipped), 2 honest and discarded by the aggregator,
    3 Byzantine clipped, 4 Byzantine discarded; one crash and one rejection; 3 flagged; 2
    clients sidelined."""
    return RoundRecord(
        round=round_, model_version=round_ + 1, committed=True,
        accepted=[0, 1, 2, 3, 4], accepted_attempts=[1] * 5,
        events=[RoundEvent(5, 1, FailureKind.CRASH, 1.0),
                RoundEvent(6, 1, FailureKind.REJECTED, 1.0, reason=RejectReason.NON_FINITE)],
        discarded=[2, 4], scaled={1: 0.5, 3: 0.25}, flagged=[3], sidelined=2,
        injected=[_byzantine(3), _byzantine(4)], metrics={"accuracy": 0.5},
    ).to_json()  # fmt: skip


def test_every_fate_of_an_update_is_its_own_layer() -> None:
    layers = {label: heights for label, heights, _ in task_layers([_robust_round(0)])}
    assert layers == {
        "aggregated in full": [1.0],
        "clipped": [1.0],
        "discarded by aggregator": [1.0],
        "Byzantine: clipped": [1.0],
        "Byzantine: discarded by aggregator": [1.0],
        "failed: crash": [1.0],
        "rejected: non_finite": [1.0],
    }
    watch = {label: values for label, values, _ in _watch_series([_robust_round(0)])}
    assert watch == {
        "updates flagged by the aggregator": [1.0],
        "clients sidelined (incl. on probation)": [2.0],
    }


def test_a_byzantine_update_aggregated_in_full_is_counted_as_such() -> None:
    record = _robust_round(0)
    record["discarded"], record["scaled"] = [], {}
    layers = {label: heights for label, heights, _ in task_layers([record])}
    assert layers["aggregated in full"] == [3.0]
    assert layers["Byzantine: aggregated in full"] == [2.0]


def test_long_runs_are_binned_and_still_draw(tmp_path: Path) -> None:
    assert _bin([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.5, 3.5, 5.0]
    history = [_robust_round(r) for r in range(1001)]
    history[500]["committed"] = False
    plot_faults(history, tmp_path / "faults.png")
    plot_accuracy(history, tmp_path / "accuracy.png")
    assert (tmp_path / "faults.png").stat().st_size > 10_000


def test_the_accuracy_title_says_what_is_drawn_and_how_often() -> None:
    every = [{"round": r, "metrics": {"accuracy": 0.5, "loss": 1.0}} for r in range(4)]
    assert _accuracy_title(every, ["accuracy", "loss"]) == (
        "global model on the test set: accuracy and loss, after each round"
    )
    sparse = [{"round": r, "metrics": {"accuracy": 0.5}} if r % 2 else {"round": r, "metrics": {}}
              for r in range(4)]  # fmt: skip
    assert _accuracy_title(sparse, ["accuracy"]) == (
        "global model on the test set: accuracy, measured after 2 of 4 rounds"
    )
