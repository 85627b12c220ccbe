"""Run directories: a run never writes over another, a refused resume writes nothing, every
bad path is one line with an exit code (no traceback), a run with no commit fails."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from phalanx.cli.app import app
from phalanx.core.locks import DirectoryLock
from phalanx.core.messages import Envelope
from phalanx.errors import PhalanxError
from tests.scenario.test_cli import TINY


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["run", *args])


def code(result: Result) -> int:
    """The exit code ``phalanx`` gives: a PhalanxError's own, else typer's."""
    if isinstance(result.exception, PhalanxError):
        return result.exception.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".phalanx.lock"
    }


def finished(tmp_path: Path, *sets: str) -> Path:
    out = tmp_path / "run"
    result = invoke("--out", str(out), *TINY, "--no-plots", *sets)
    assert result.exit_code == 0, result.output
    return out


def test_out_on_a_finished_run_refuses_and_changes_nothing(tmp_path: Path) -> None:
    out = finished(tmp_path)
    before = snapshot(out)
    result = invoke("--out", str(out), *TINY, "--set", "seed=9")
    assert code(result) == 2
    assert "already holds a run" in str(result.exception) and "--force" in str(result.exception)
    assert snapshot(out) == before


def test_force_deletes_the_old_run_first(tmp_path: Path) -> None:
    out = finished(tmp_path, "--set", "rounds=5")
    result = invoke("--out", str(out), *TINY, "--no-plots", "--force", "--set", "seed=9")
    assert code(result) == 0, result.output
    assert json.loads((out / "config.json").read_text())["seed"] == 9
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("r")) == [
        "round-00000001",
        "round-00000002",
        "round-00000003",
    ]  # fmt: skip  (the earlier run's rounds 4 and 5 are gone)
    assert len((out / "history.jsonl").read_text().splitlines()) == 3


def test_no_out_makes_a_fresh_directory_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert code(invoke(*TINY, "--no-plots")) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["seed", "seed-2"]


def test_resume_without_config_json_refuses_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "typo").mkdir()
    result = invoke("--resume", str(tmp_path / "typo"), "--quiet")
    assert code(result) == 2 and "no config.json" in str(result.exception)
    assert list((tmp_path / "typo").iterdir()) == []


def test_resume_without_a_checkpoint_refuses_and_keeps_the_history(tmp_path: Path) -> None:
    out = finished(tmp_path)
    for path in (out / "checkpoints").glob("round-*"):
        for item in path.iterdir():
            item.unlink()
        path.rmdir()
    before = snapshot(out)
    result = invoke("--resume", str(out), "--quiet")
    assert code(result) == 5 and "no valid checkpoint of this configuration" in str(
        result.exception
    )
    assert snapshot(out) == before
    shutil.rmtree(out / "checkpoints")  # killed before its first checkpoint
    result = invoke("--resume", str(out), "--quiet")
    assert code(result) == 5 and "--force" in str(result.exception)
    assert not (out / "checkpoints").exists()  # refused before the store was taken


def test_a_refused_trajectory_change_names_the_keys_and_keeps_config_json(tmp_path: Path) -> None:
    out = finished(tmp_path)
    before = (out / "config.json").read_bytes()
    result = invoke("--resume", str(out), "--quiet", "--set", "seed=7", "--set", "training.lr=0.5")
    assert code(result) == 2
    assert "seed: 3 -> 7" in str(result.exception) or "seed: 42 -> 7" in str(result.exception)
    assert "training.lr: 0.01 -> 0.5" in str(result.exception)
    assert (out / "config.json").read_bytes() == before
    again = invoke("--resume", str(out), "--quiet", "--no-plots", "--set", "rounds=4")
    assert code(again) == 0, again.output
    assert json.loads((out / "config.json").read_text())["rounds"] == 4


def test_a_second_process_on_a_run_directory_is_refused(tmp_path: Path) -> None:
    out = finished(tmp_path)
    with DirectoryLock(out, purpose="run"):
        result = invoke("--resume", str(out), "--quiet", "--set", "rounds=4")
    assert code(result) == 7 and f"pid {os.getpid()}" in str(result.exception)


def test_run_json_records_the_run_id_and_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = finished(tmp_path)
    info = json.loads((out / "run.json").read_text())
    assert len(info["run_id"]) == 32 and info["threads"] == 1
    # As if the run began on 2 threads: resuming on 2 here would leave this test process's
    # OpenMP pool multi-threaded, and a worker pool forked later in it would hang (libgomp).
    (out / "run.json").write_text(json.dumps({**info, "threads": 2}))
    stamped: list[str] = []  # the run id on each round's messages (Envelope.run_id)

    def envelope(**fields: Any) -> Envelope:
        stamped.append(fields["run_id"])
        return Envelope(**fields)

    monkeypatch.setattr("phalanx.engine.engine.Envelope", envelope)
    result = invoke("--resume", str(out), "--quiet", "--no-plots", "--set", "rounds=4")
    assert code(result) == 0, result.output
    assert "began with --threads 2 and resumes with --threads 1" in caplog.text
    resumed = json.loads((out / "run.json").read_text())
    assert resumed["run_id"] == info["run_id"] and stamped == [info["run_id"]]
    sessions = resumed["sessions"]
    assert [s["threads"] for s in sessions] == [1, 1] and sessions[1]["resumed_at_round"] == 3


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--out", "{file}"], 2, "is a file, not a directory"),
        (["--out", "{file}/sub"], 2, "is a file, not a directory"),
        (["--resume", "{file}"], 2, "is a file, not a directory"),
        (["{tmp}"], 2, "is a directory, not a TOML file"),
        (["--threads", "0"], 2, "--threads must be at least 1"),
        (["--set", "workload.hidden=100000000000"], 3, "do not fit in memory"),
    ],
)
def test_bad_paths_and_values_are_one_line_errors(
    tmp_path: Path, args: list[str], exit_code: int, message: str
) -> None:
    (tmp_path / "file").write_text("x")
    filled = [a.format(file=tmp_path / "file", tmp=tmp_path) for a in args]
    result = invoke(*filled, "--quiet", "--set", "rounds=1")
    assert code(result) == exit_code and message in str(result.exception)


def test_a_shipped_name_wins_over_a_directory_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "robust").mkdir()
    result = invoke("robust", "--out", "out", "--set", "rounds=1", "--quiet", "--no-plots")
    assert code(result) == 0, result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["name"] == "robust"


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_disk_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    def refuse(path: Path, data: bytes) -> None:
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr("phalanx.coordinator.rundir.write_atomic", refuse)
    result = invoke("--out", str(tmp_path / "run"), *TINY)
    assert code(result) == 9 and os.strerror(err) in str(result.exception)


def test_out_on_a_read_only_filesystem_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = invoke("--out", str(tmp_path / "run"), *TINY)
    assert code(result) == 9 and "Read-only file system" in str(result.exception)


def test_a_run_that_commits_nothing_exits_8_after_writing_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke(
        "--out", str(out), *TINY, "--no-plots", "--set", "faults.rules=[{rate=1.0,kinds=['crash']}]"
    )
    assert code(result) == 8 and "no round committed" in str(result.exception)
    assert json.loads((out / "summary.json").read_text())["rounds_committed"] == 0
    assert len((out / "history.jsonl").read_text().splitlines()) == 3


def test_a_replica_lost_for_good_is_resumed_with_a_lower_write_quorum(tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    out = finished(tmp_path, "--set", f'checkpoint.stores=["{replica}"]')  # quorum: both stores
    shutil.rmtree(replica)  # lost for good: no round reached the quorum any more
    before = snapshot(out)

    refused = invoke("--resume", str(out), "--quiet", "--no-plots", "--set", "rounds=5")
    assert code(refused) == 5
    assert "below the write quorum" in str(refused.exception)
    assert "checkpoint.write_quorum" in str(refused.exception)
    assert snapshot(out) == before  # nothing written before every check passed

    lowered = ["--set", "rounds=5", "--set", "checkpoint.write_quorum=1"]
    result = invoke("--resume", str(out), "--quiet", "--no-plots", *lowered)
    assert code(result) == 0, result.output
    assert json.loads((out / "config.json").read_text())["checkpoint"]["write_quorum"] == 1
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2, 3, 4]
    assert (replica / "round-00000005").is_dir()  # the replica is written again from round 4
