"""``phalanx checkpoints list|verify DIR`` on a run directory, a checkpoints directory and
an fsspec URL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest
from tests.contract.test_checkpoint_store import make_state
from tests.scenario.conftest import BASE, tiny_config
from typer.testing import CliRunner

from phalanx.checkpoint import FsspecCheckpointStore, LocalCheckpointStore, build_store
from phalanx.checkpoint.store import held
from phalanx.cli.app import app
from phalanx.cli.run import CONFIG_FILE
from phalanx.config import build_config
from phalanx.errors import CheckpointError

RUNNER = CliRunner(env={"COLUMNS": "400"})  # one table row per line, paths unwrapped


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run replicated to two more stores, with checkpoints of rounds 1, 2 and 3."""
    replicas = [str(tmp_path / "replica-1"), str(tmp_path / "replica-2")]
    checkpoint = {"every": 1, "stores": replicas, "write_quorum": 2}
    config = tiny_config(tree={**BASE, "checkpoint": checkpoint})
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(config.model_dump_json())
    store = build_store(config.checkpoint, run / "checkpoints")
    for round_ in (1, 2, 3):
        store.save(make_state(round_))
    return run


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_list_shows_every_round_and_the_stores_holding_it(run_dir: Path) -> None:
    result = RUNNER.invoke(app, ["checkpoints", "list", str(run_dir)])

    assert result.exit_code == 0, result.output
    for store in ("run/checkpoints", "replica-1", "replica-2"):
        assert result.output.count(store) >= 3
    assert result.output.count(" valid ") == 3
    assert "KiB" in result.output or " B " in result.output


def test_list_names_a_damaged_copy(run_dir: Path) -> None:
    flip(run_dir.parent / "replica-1" / "round-00000003" / "params.safetensors")

    result = RUNNER.invoke(app, ["checkpoints", "list", str(run_dir)])

    assert result.exit_code == 0, result.output
    assert "valid; damaged copies:" in result.output
    assert "replica-1/round-00000003/params.safetensors: digest mismatch" in result.output


def test_verify_passes_when_the_newest_is_valid(run_dir: Path) -> None:
    result = RUNNER.invoke(app, ["checkpoints", "verify", str(run_dir)])

    assert result.exit_code == 0, result.output
    assert "round 3 is valid" in result.output


def test_verify_fails_with_the_problems_when_the_newest_is_invalid(run_dir: Path) -> None:
    for root in ("run/checkpoints", "replica-1", "replica-2"):
        (run_dir.parent / root / "round-00000003" / "state.json").write_text("{}")

    result = RUNNER.invoke(app, ["checkpoints", "verify", str(run_dir)])

    assert result.exit_code == CheckpointError.exit_code
    assert "round-00000003/state.json: truncated" in result.stderr
    assert "newest checkpoint (round 3) is invalid; a resume would use round 2" in result.stderr


def test_a_checkpoints_directory_itself_is_accepted(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    store.save(make_state(4))

    listed = RUNNER.invoke(app, ["checkpoints", "list", str(tmp_path)])
    verified = RUNNER.invoke(app, ["checkpoints", "verify", str(tmp_path)])

    assert listed.exit_code == 0 and str(tmp_path) in listed.output
    assert verified.exit_code == 0 and "round 4 is valid" in verified.output


def test_a_run_without_config_uses_its_checkpoints_directory(tmp_path: Path) -> None:
    LocalCheckpointStore(tmp_path / "checkpoints").save(make_state(5))

    result = RUNNER.invoke(app, ["checkpoints", "verify", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert f"in {tmp_path / 'checkpoints'}" in result.output


def test_an_fsspec_url_is_accepted() -> None:
    url = f"memory://phalanx-cli/{uuid.uuid4().hex}"
    FsspecCheckpointStore(url).save(make_state(2))
    try:
        result = RUNNER.invoke(app, ["checkpoints", "verify", url])
    finally:
        fs, root = fsspec.core.url_to_fs(url)
        fs.rm(root, recursive=True)

    assert result.exit_code == 0, result.output
    assert "round 2 is valid" in result.output


def test_no_checkpoints_fails_verify_but_not_list(tmp_path: Path) -> None:
    listed = RUNNER.invoke(app, ["checkpoints", "list", str(tmp_path)])
    verified = RUNNER.invoke(app, ["checkpoints", "verify", str(tmp_path)])

    assert listed.exit_code == 0 and "no checkpoints" in listed.output
    assert verified.exit_code == CheckpointError.exit_code
    assert "no checkpoints" in verified.stderr


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["checkpoints", "list", str(tmp_path / "nowhere")])

    assert result.exit_code == 2
    assert "is not a directory" in result.output


def test_a_round_below_the_write_quorum_is_listed_and_fails_verify(run_dir: Path) -> None:
    LocalCheckpointStore(run_dir / "checkpoints").save(make_state(4))  # reached 1 of 3

    listed = RUNNER.invoke(app, ["checkpoints", "list", str(run_dir)])
    verified = RUNNER.invoke(app, ["checkpoints", "verify", str(run_dir)])

    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.strip(" │|").startswith("4 "))
    assert "valid, below write quorum (1 of 3 stores, 2 required), not a commit" in row
    assert listed.output.count(" valid ") == 3  # rounds 1-3 are plain commits
    assert verified.exit_code == CheckpointError.exit_code
    assert (
        "newest checkpoint (round 4) is valid, below write quorum (1 of 3 stores, 2 required): "
        "not a commit; a resume would use round 3"
    ) in " ".join(verified.stderr.split())


def test_reading_works_beside_a_run_holding_the_stores(run_dir: Path) -> None:
    config = build_config(json.loads((run_dir / CONFIG_FILE).read_text()))
    with held(build_store(config.checkpoint, run_dir / "checkpoints")):
        listed = RUNNER.invoke(app, ["checkpoints", "list", str(run_dir)])
        verified = RUNNER.invoke(app, ["checkpoints", "verify", str(run_dir)])

    assert listed.exit_code == 0, listed.output
    assert verified.exit_code == 0 and "round 3 is valid and committed" in verified.output
