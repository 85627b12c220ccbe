"""The plot helper process: draws both PNGs; a helper that fails, dies or hangs becomes a
StorageError naming what happened (never a hang), while summary.json is still written; it
dies with its parent; it never imports torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import phalanx.cli.run_command as run_command
from phalanx.cli.app import app
from phalanx.engine.history import RoundRecord
from phalanx.errors import StorageError
from phalanx.observability.plot_process import PlotProcess
from phalanx.observability.report import write_run_outputs
from phalanx.observability.summary import summarize

PNG = b"\x89PNG\r\n\x1a\n"
EXITS_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SILENT = [sys.executable, "-c", "import time; time.sleep(60)"]


def _robust_round(round_: int) -> dict[str, Any]:
    """Three accepted, one of them Byzantine and discarded by the aggregator."""
    byzantine = {"round": round_, "client": 2, "attempt": 0, "kind": "byzantine", "detail": ""}
    return RoundRecord(
        round=round_, model_version=round_ + 1, committed=True, accepted=[0, 1, 2],
        accepted_attempts=[0, 0, 0], discarded=[2], injected=[byzantine],
        metrics={"accuracy": 0.5, "loss": 1.0},
    ).to_json()  # fmt: skip


def _gone(pid: int) -> bool:
    """True once ``pid`` is reaped or a zombie (dead, its status not yet collected)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_the_helper_draws_both_plots(tmp_path: Path) -> None:
    history = [_robust_round(r) for r in range(3)]
    with PlotProcess() as drawer:
        drawer.draw(tmp_path, history)
    for name in ("accuracy.png", "faults.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "faults.png"]


def test_a_helper_that_exits_without_drawing_is_an_error(tmp_path: Path) -> None:
    with PlotProcess(EXITS_3) as drawer, pytest.raises(StorageError, match="status 3"):
        drawer.draw(tmp_path, [_robust_round(0)])


def test_a_killed_helper_is_named_as_such(tmp_path: Path) -> None:
    with PlotProcess() as drawer:
        assert drawer.pid is not None
        os.kill(drawer.pid, signal.SIGKILL)
        with pytest.raises(StorageError, match="killed by SIGKILL"):
            drawer.draw(tmp_path, [_robust_round(0)])


def test_a_silent_helper_is_killed_after_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    with PlotProcess(SILENT) as drawer, pytest.raises(StorageError, match=r"within 0\.5 s"):
        drawer.draw(tmp_path, [_robust_round(0)], timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert drawer.pid is not None and _gone(drawer.pid)


def test_the_helpers_own_error_is_reported(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with (
        PlotProcess() as drawer,
        pytest.raises(StorageError, match="plots not drawn: FileExistsError"),
    ):
        drawer.draw(not_a_dir, [_robust_round(0)])


def test_a_failure_in_the_forked_drawing_is_reported(tmp_path: Path) -> None:
    """faults.png is drawn in a child the helper forks: a round it cannot read is named,
    while accuracy.png, drawn by the helper itself, is written."""
    round_without_tasks = {"round": 0, "committed": True, "metrics": {"accuracy": 0.5}}
    with (
        PlotProcess() as drawer,
        pytest.raises(StorageError, match=r"not drawn: faults\.png: KeyError: 'probes'"),
    ):
        drawer.draw(tmp_path, [round_without_tasks])
    assert (tmp_path / "accuracy.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "faults.png").exists()


def test_closing_an_unused_helper_reaps_it() -> None:
    drawer = PlotProcess()
    drawer.close()
    drawer.close()  # idempotent
    assert drawer.pid is not None and _gone(drawer.pid)


def test_a_failed_drawing_still_writes_the_summary(tmp_path: Path) -> None:
    history = [_robust_round(r) for r in range(2)]
    summary = summarize(history, wall_time_s=1.0, train_time_s=0.5)
    with PlotProcess(EXITS_3) as drawer, pytest.raises(StorageError, match=r"summary\.json was"):
        write_run_outputs(tmp_path, history, summary, drawer=drawer)
    assert json.loads((tmp_path / "summary.json").read_text())["rounds"] == 2
    assert not (tmp_path / "faults.png").exists()


def test_the_cli_exits_9_when_the_plots_fail_and_keeps_the_other_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_command, "PlotProcess", lambda: PlotProcess(EXITS_3))
    tiny = ["rounds=2", "workload.num_clients=6", "workload.samples_per_client=40",
            "selection.clients_per_round=4", "quorum.min_updates=2"]  # fmt: skip
    overrides = [arg for key in tiny for arg in ("--set", key)]
    result = CliRunner().invoke(app, ["run", "--quiet", "--out", str(tmp_path), *overrides])
    assert isinstance(result.exception, StorageError)  # main() turns it into exit code 9
    assert result.exception.exit_code == 9
    assert "plots not drawn" in str(result.exception)
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "history.jsonl").is_file()


def test_the_helper_dies_with_its_parent() -> None:
    """The run is SIGKILLed while a process it forked still holds the helper's stdin open,
    so no end of input tells the helper: the kernel must kill it."""
    code = ("import os, time\nfrom phalanx.observability.plot_process import PlotProcess\n"
            "d = PlotProcess()\nholder = os.fork()\n"
            "if holder == 0:\n    time.sleep(30)\n    os._exit(0)\n"
            "print(d.pid, holder, flush=True)\ntime.sleep(60)")  # fmt: skip
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as parent:
        try:
            assert parent.stdout is not None
            helper, holder = map(int, parent.stdout.readline().split())
        finally:
            parent.kill()
            parent.wait(timeout=10)
    try:
        deadline = time.monotonic() + 10
        while not _gone(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(helper)
        assert not _gone(holder)  # the pipe was still held open
    finally:
        os.kill(holder, signal.SIGKILL)


def test_the_helper_never_imports_torch() -> None:
    code = (
        "import sys\nimport phalanx.observability.plot_worker, phalanx.observability.plots\n"
        "from phalanx.observability.report import draw_plots\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
