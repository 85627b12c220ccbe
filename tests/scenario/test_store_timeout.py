"""A checkpoint store that hangs: the save times out, the run stops with a StorageError
(exit 9) naming the store, nothing half-committed is left, and resume ends where an
uninterrupted run ends, whether the late write lands after all or never does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from phalanx.checkpoint import CheckpointStore, LocalCheckpointStore
from phalanx.cli.app import app
from phalanx.config import RunConfig
from phalanx.core.locks import DirectoryLock
from phalanx.core.state import ServerState
from phalanx.errors import LockedError, StorageError
from phalanx.simulation import Simulation
from tests.scenario.conftest import tiny_config

HANG_AT = 3  # the save of the state after round index 2 hangs
TIMEOUT = "checkpoint.timeout_s=0.3"


class HangingStore:
    """A real local store whose save of round ``HANG_AT`` blocks until ``go`` is set,
    then writes (``lands``) or fails as a dead disk would."""

    def __init__(self, inner: CheckpointStore, *, lands: bool) -> None:
        self.inner = inner
        self.lands = lands
        self.go = threading.Event()
        self.finished = threading.Event()

    def save(self, state: ServerState, *, prune: bool = True) -> str:
        if state.round != HANG_AT:
            return self.inner.save(state, prune=prune)
        try:
            if not self.go.wait(30) or not self.lands:
                raise OSError("the disk went away")
            return self.inner.save(state, prune=prune)
        finally:
            self.finished.set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def hang_saves(monkeypatch: pytest.MonkeyPatch, *, lands: bool) -> list[HangingStore]:
    made: list[HangingStore] = []
    build = Simulation._store

    def store(config: RunConfig, root: Path | None) -> CheckpointStore | None:
        inner = build(config, root)
        if inner is None:
            return None
        made.append(HangingStore(inner, lands=lands))
        return made[-1]  # type: ignore[return-value]

    monkeypatch.setattr(Simulation, "_store", staticmethod(store))
    return made


@pytest.mark.parametrize("lands", [True, False])
def test_a_hanging_save_fails_the_run_and_resume_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lands: bool
) -> None:
    config = tiny_config("checkpoint.every=1", "checkpoint.keep=10", "rounds=5", TIMEOUT)
    reference = Simulation(config).run()
    made = hang_saves(monkeypatch, lands=lands)
    with pytest.raises(StorageError) as caught:
        Simulation(config).run(checkpoint_dir=tmp_path)
    error, hanging = caught.value, made[0]
    assert error.exit_code == 9
    assert f"round {HANG_AT}" in str(error) and str(tmp_path) in str(error)
    assert "0.3 s" in str(error)
    # The late call still runs and still holds the store: nobody else writes there meanwhile.
    assert not hanging.finished.is_set()
    with pytest.raises(LockedError):
        DirectoryLock(tmp_path, purpose="a second run").acquire()
    # The previous round's checkpoint is committed and intact; the hanging one is not there.
    listed = LocalCheckpointStore(tmp_path).list()
    assert [(info.round, info.valid) for info in listed] == [(1, True), (2, True)]
    hanging.go.set()
    assert hanging.finished.wait(10)
    lock = DirectoryLock(tmp_path, purpose="the test")
    for _ in range(100):  # the late call gives the lock back as it ends
        try:
            lock.acquire()
            break
        except LockedError:
            threading.Event().wait(0.05)
    lock.release()
    rounds = [info.round for info in LocalCheckpointStore(tmp_path).list() if info.valid]
    assert rounds == ([1, 2, 3] if lands else [1, 2])  # a whole checkpoint, or none
    monkeypatch.undo()
    resumed = Simulation(config).run(checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed.params, reference.params)
    assert [r["accepted"] for r in resumed.history] == [r["accepted"] for r in reference.history]


def test_the_command_line_exits_9_naming_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = hang_saves(monkeypatch, lands=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["run", "--out", str(out), "--no-plots", "--quiet",
         "--set", "rounds=4", "--set", "workload.num_clients=6",
         "--set", "workload.samples_per_client=40", "--set", "selection.clients_per_round=4",
         "--set", "quorum.min_updates=2", "--set", "checkpoint.every=1", "--set", TIMEOUT],
    )  # fmt: skip
    made[0].go.set()
    assert isinstance(result.exception, StorageError), result.output
    assert result.exception.exit_code == 9
    assert str(out / "checkpoints") in str(result.exception)
    assert made[0].finished.wait(10)


def test_the_timeout_is_a_documented_positive_setting() -> None:
    from phalanx.config import CheckpointConfig

    field = CheckpointConfig.model_fields["timeout_s"]
    assert field.description and "StorageError" in field.description
    with pytest.raises(ValueError, match="timeout_s"):
        CheckpointConfig(timeout_s=0)
