"""The command line, end to end in-process: outputs, report, errors, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phalanx.cli.app import app

TINY = [
    "--set", "rounds=3",
    "--set", "workload.num_clients=6",
    "--set", "workload.samples_per_client=40",
    "--set", "selection.clients_per_round=4",
    "--set", "quorum.min_updates=2",
    "--set", "checkpoint.every=1",
    "--quiet",
]  # fmt: skip


def test_run_writes_summary_history_and_plots(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rounds"] == 3
    assert summary["rounds_committed"] + summary["rounds_failed"] == 3
    for key in ("final_accuracy", "faults_injected", "faults_detected", "rejections",
                "retries", "replacements", "wall_time_s", "train_time_s"):  # fmt: skip
        assert key in summary
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]
    for plot in ("accuracy.png", "faults.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")
    assert "rounds committed" in result.output


def test_report_redraws(tmp_path: Path) -> None:
    CliRunner().invoke(app, ["run", "--out", str(tmp_path), *TINY])
    (tmp_path / "faults.png").unlink()
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "faults.png").exists()


def test_bad_config_exits_2_naming_the_key_and_the_choices(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "phalanx", "run", "--out", str(tmp_path)]
    done = subprocess.run(
        [*command, "--set", "workload.name=mnist"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "workload" in done.stderr and "'digits'" in done.stderr
    assert "Traceback" not in done.stderr
    result = CliRunner().invoke(app, ["run", "--set", "selection.clients_per_rnd=3"])
    assert "selection.clients_per_rnd" in str(result.exception)
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("aggregation.name=krm", "unknown aggregator 'krm'; valid: bulyan"),
        ("aggregation.params={m=2}", "unknown parameter 'm' for aggregator 'fedavg'"),
        (
            "faults.byzantine.attack=alie2",
            "unknown attack 'alie2'; valid: alie, alie_optimal, backdoor",
        ),
    ],
)
def test_unknown_names_fail_before_any_output(tmp_path: Path, override: str, message: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--out", str(out), *TINY, "--set", override])
    assert message in str(result.exception)
    assert not out.exists()


def test_resume_continues_a_run_to_the_same_end(tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    CliRunner().invoke(app, ["run", "--out", str(whole), *TINY, "--set", "rounds=4"])
    CliRunner().invoke(app, ["run", "--out", str(split), *TINY, "--set", "rounds=2"])
    result = CliRunner().invoke(
        app, ["run", "--resume", str(split), "--set", "rounds=4", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    read = lambda d: [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["metrics"] for r in read(split)] == [r["metrics"] for r in read(whole)]


def test_an_unreadable_saved_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("")  # as a kill mid-write used to leave it
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--quiet"])
    assert "config.json: cannot read" in str(result.exception)
