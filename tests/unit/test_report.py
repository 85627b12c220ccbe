"""Run summary, summary table, plots and the run output folder, on a four-round history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from phalanx.engine.history import RoundEvent, RoundRecord
from phalanx.errors import PhalanxError
from phalanx.observability import (
    redraw,
    render_summary,
    summarize,
    write_run_outputs,
)
from phalanx.observability.plots import plot_accuracy, plot_faults
from phalanx.observability.report import process_wall_time_s, read_history
from phalanx.types import FailureKind, RejectReason

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fault(round_: int, client: int, kind: str, attempt: int = 0) -> dict[str, Any]:
    return {"round": round_, "client": client, "attempt": attempt, "kind": kind, "detail": ""}


def _event(client: int, kind: FailureKind, reason: RejectReason | None = None) -> RoundEvent:
    return RoundEvent(client=client, attempt=0, kind=kind, time=1.0, reason=reason)


def _history() -> list[dict[str, Any]]:
    """Round 1: a crash and a retried straggler. Round 2: one corrupt update rejected, one
    accepted. Round 3: discarded (quorum), with an accepted corrupt update. Round 4: clean."""
    rounds = [
        RoundRecord(
            round=1,
            model_version=1,
            committed=True,
            dispatched=[0, 1, 2, 3],
            accepted=[0, 1, 2],
            accepted_attempts=[0, 0, 1],
            events=[_event(3, FailureKind.CRASH), _event(2, FailureKind.TIMEOUT)],
            retries=1,
            injected=[_fault(1, 3, "crash"), _fault(1, 2, "straggle")],
            metrics={"accuracy": 0.5, "loss": 1.2},
            started_at=0.0,
            ended_at=10.0,
        ),
        RoundRecord(
            round=2,
            model_version=2,
            committed=True,
            dispatched=[0, 1, 2, 3],
            accepted=[0, 1, 3],
            accepted_attempts=[0, 0, 0],
            events=[_event(2, FailureKind.REJECTED, RejectReason.NON_FINITE)],
            probes=1,
            partial=1,
            injected=[_fault(2, 2, "corrupt"), _fault(2, 1, "corrupt")],
            metrics={"accuracy": 0.7, "loss": 0.8},
            started_at=10.0,
            ended_at=20.0,
        ),
        RoundRecord(
            round=3,
            model_version=2,
            committed=False,
            reasons=["quorum: 1 of 3 accepted, need 2"],
            dispatched=[0, 1, 3, 2, 4],
            accepted=[0],
            accepted_attempts=[0],
            events=[_event(1, FailureKind.DROP), _event(3, FailureKind.TIMEOUT)],
            replacements=2,
            cancelled=1,
            injected=[_fault(3, 0, "corrupt"), _fault(3, 1, "drop"), _fault(3, 3, "hang")],
            started_at=20.0,
            ended_at=35.0,
        ),
        RoundRecord(
            round=4,
            model_version=3,
            committed=True,
            dispatched=[0, 1, 2],
            accepted=[0, 1, 2],
            accepted_attempts=[0, 0, 0],
            metrics={"accuracy": 0.65, "loss": 0.9},
            started_at=35.0,
            ended_at=42.0,
        ),
    ]
    return [record.to_json() for record in rounds]


def test_summarize_counts_every_key() -> None:
    summary = summarize(_history(), wall_time_s=5.5, train_time_s=4.25, extra={"seed": 7})

    assert summary == {
        "rounds": 4,
        "rounds_committed": 3,
        "rounds_failed": 1,
        "failed_rounds": [{"round": 3, "reasons": ["quorum: 1 of 3 accepted, need 2"]}],
        "final_model_version": 3,
        "final_accuracy": 0.65,
        "best_accuracy": 0.7,
        "faults_injected": {"corrupt": 3, "crash": 1, "drop": 1, "hang": 1, "straggle": 1},
        "faults_detected": {"crash": 1, "drop": 1, "rejected": 1, "timeout": 2},
        "rejections": {"non_finite": 1},
        "retries": 1,
        "replacements": 2,
        "probes": 1,
        "cancelled": 1,
        "partial_updates": 1,
        "updates_accepted": 10,
        "corrupt_injected": 3,
        "corrupt_aggregated": 1,
        "aggregator_discarded": {},
        "aggregator_scaled": {},
        "aggregator_flagged": {},
        "byzantine": {
            "clients": [],
            "updates_sent": 0,
            "aggregated": 0,
            "discarded": 0,
            "scaled": 0,
            "honest_discarded": 0,
        },
        "flags": {
            "honest_flagged": 0,
            "byzantine_flagged": 0,
            "honest_aggregated": 9,  # the discarded round's update does not count
            "honest_flag_rate": 0.0,
            "honest_sidelined": 0,
            "honest_rounds_lost": 0,
            "honest_rounds_lost_share": 0.0,
        },
        "wall_time_s": 5.5,
        "train_time_s": 4.25,
        "sim_time_s": 42.0,
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("accepted", "committed", "expected"),
    [
        pytest.param([0, 1], True, 0, id="corrupt-client-rejected"),
        pytest.param([0, 1, 2], True, 1, id="accepted-in-committed-round"),
        pytest.param([0, 1, 2], False, 0, id="accepted-in-discarded-round"),
    ],
)
def test_corrupt_aggregated_needs_acceptance_and_commit(
    accepted: list[int], committed: bool, expected: int
) -> None:
    record = RoundRecord(
        round=1,
        model_version=1,
        committed=committed,
        accepted=accepted,
        accepted_attempts=[0] * len(accepted),
        injected=[_fault(1, 2, "corrupt")],
    )

    summary = summarize([record.to_json()], wall_time_s=0.0, train_time_s=0.0)

    assert (summary["corrupt_injected"], summary["corrupt_aggregated"]) == (1, expected)


def test_corrupt_aggregated_matches_the_attempt() -> None:
    record = RoundRecord(
        round=1,
        model_version=1,
        committed=True,
        accepted=[2],
        accepted_attempts=[1],  # the retry was accepted, the corrupted first attempt was not
        injected=[_fault(1, 2, "corrupt", attempt=0)],
    )

    summary = summarize([record.to_json()], wall_time_s=0.0, train_time_s=0.0)

    assert summary["corrupt_aggregated"] == 0


def test_summarize_empty_history() -> None:
    summary = summarize([], wall_time_s=1.0, train_time_s=0.0)

    assert summary["rounds"] == 0
    assert summary["final_accuracy"] is None
    assert summary["best_accuracy"] is None
    assert summary["sim_time_s"] == 0.0


def test_render_summary_shows_the_numbers() -> None:
    summary = summarize(_history(), wall_time_s=5.5, train_time_s=4.25)
    console = Console(record=True, width=100)

    console.print(render_summary(summary))

    text = console.export_text()
    assert "phalanx run summary" in text
    for expected in ["3 of 4", "1 (rounds 3)", "0.6500", "0.7000", "corrupt 3", "timeout 2"]:
        assert expected in text
    for expected in ["non_finite 1", "1 of 3", "5.50 s", "4.25 s"]:
        assert expected in text


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > len(PNG_SIGNATURE)


def test_plots_of_an_empty_history(tmp_path: Path) -> None:
    plot_accuracy([], tmp_path / "a.png")
    plot_faults([], tmp_path / "f.png")

    _assert_png(tmp_path / "a.png")
    _assert_png(tmp_path / "f.png")


def _write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """What the run lifecycle leaves beside the outputs: one line per round."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))


def test_write_run_outputs_writes_summary_and_plots_not_history(tmp_path: Path) -> None:
    history = _history()
    summary = summarize(history, wall_time_s=5.5, train_time_s=4.25)
    out_dir = tmp_path / "run" / "out"

    before = process_wall_time_s()
    written = write_run_outputs(out_dir, history, summary)

    assert written == {**summary, "wall_time_s": written["wall_time_s"]}
    assert written["wall_time_s"] >= before  # the process's, not the 5.5 given
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "accuracy.png",
        "faults.png",
        "summary.json",
    ]  # history.jsonl is the lifecycle's append-only log, never rewritten here
    assert json.loads((out_dir / "summary.json").read_text()) == written
    _assert_png(out_dir / "accuracy.png")
    _assert_png(out_dir / "faults.png")


def test_redraw_reproduces_summary_and_plots(tmp_path: Path) -> None:
    history = _history()
    summary = summarize(history, wall_time_s=5.5, train_time_s=4.25)
    _write_history(tmp_path, history)
    summary = write_run_outputs(tmp_path, history, summary)
    (tmp_path / "accuracy.png").unlink()
    (tmp_path / "faults.png").unlink()

    assert redraw(tmp_path) == summary
    _assert_png(tmp_path / "accuracy.png")
    _assert_png(tmp_path / "faults.png")


def test_redraw_recomputes_a_missing_summary(tmp_path: Path) -> None:
    history = _history()
    _write_history(tmp_path, history)
    write_run_outputs(tmp_path, history, {})
    (tmp_path / "summary.json").unlink()

    assert redraw(tmp_path) == summarize(history, wall_time_s=0.0, train_time_s=0.0)


def test_redraw_without_history_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PhalanxError, match=r"history\.jsonl"):
        redraw(tmp_path)


def test_a_damaged_line_before_the_last_is_refused(tmp_path: Path) -> None:
    lines = [json.dumps(record) for record in _history()]
    lines[1] = lines[1][:40]
    (tmp_path / "history.jsonl").write_text("\n".join(lines) + "\n")

    with pytest.raises(PhalanxError, match=r"history\.jsonl:2: invalid JSON.*before its last"):
        redraw(tmp_path)


@pytest.mark.parametrize("newline", ["", "\n"])
def test_a_torn_last_line_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, newline: str
) -> None:
    history = _history()
    lines = [json.dumps(record) for record in history]
    text = "\n".join(lines) + "\n"
    (tmp_path / "history.jsonl").write_text(text[: -len(lines[-1]) // 2] + newline)

    assert read_history(tmp_path / "history.jsonl") == history[:-1]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "torn last line" in warnings[0].getMessage()
    assert f"history.jsonl:{len(lines)}" in warnings[0].getMessage()


def test_wall_time_counts_from_the_process_start(tmp_path: Path) -> None:
    """The interpreter's start and imports are part of a command's wall time."""
    code = "import time; time.sleep(0.4); from phalanx.observability.report import "
    code += "process_wall_time_s as w; print(w())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert 0.4 <= float(done.stdout) < 30
