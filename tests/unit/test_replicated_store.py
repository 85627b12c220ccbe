"""ReplicatedCheckpointStore: three stores under a write quorum of two.

Losing or corrupting any one store's copy of the newest checkpoint costs nothing (a run
resumed from the replicas ends bit-identical to an uninterrupted one); two of three stores
failing their writes fails the save, and with it the run, loudly.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.contract.test_checkpoint_store import make_state
from tests.scenario.conftest import BASE, tiny_config

from phalanx.checkpoint import (
    FsspecCheckpointStore,
    LocalCheckpointStore,
    ReplicatedCheckpointStore,
    build_store,
)
from phalanx.checkpoint.store import Quorum
from phalanx.config import CheckpointConfig, RunConfig, build_config
from phalanx.core.state import ServerState
from phalanx.engine.history import RoundRecord
from phalanx.errors import CheckpointError, ConfigError
from phalanx.simulation import RunResult, Simulation

STORES = ("a", "b", "c")  # a: the run's own directory; b, c: replicas
NEWEST = "round-00000002"  # the last checkpoint written before the interruption


class RunInterruptedError(Exception):
    pass


def replicated_config(root: Path, **checkpoint: Any) -> RunConfig:
    replicas = [str(root / name) for name in STORES[1:]]
    settings = {"every": 1, "stores": replicas, "write_quorum": 2, **checkpoint}
    return tiny_config("rounds=4", tree={**BASE, "checkpoint": settings})


def stop_after_round_1(state: ServerState, record: RoundRecord) -> None:
    if record.round == 1:  # observers hear of round 1 after its checkpoint (round-2) is durable
        raise RunInterruptedError


@pytest.fixture(scope="module")
def reference() -> RunResult:
    return Simulation(replicated_config(Path("unused"))).run()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three stores as an interrupted run left them; each test damages a copy of them."""
    root = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(RunInterruptedError):
        Simulation(replicated_config(root)).run(
            checkpoint_dir=root / "a", on_round=[stop_after_round_1]
        )
    return root


def without_wall_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The committed history, less the one field that measures this machine."""
    return [{k: v for k, v in record.items() if k != "wall_s"} for record in history]


def delete(path: Path) -> None:
    shutil.rmtree(path)


def flip_params(path: Path) -> None:
    data = bytearray((path / "params.safetensors").read_bytes())
    data[-3] ^= 0x01  # a single bit of one float
    (path / "params.safetensors").write_bytes(bytes(data))


def truncate_state(path: Path) -> None:
    state = path / "state.json"
    state.write_bytes(state.read_bytes()[:-10])


def flip_manifest(path: Path) -> None:
    data = bytearray((path / "MANIFEST.json").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "MANIFEST.json").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("store", "damage"),
    [("a", delete), ("b", flip_params), ("c", truncate_state), ("a", flip_manifest)],
    ids=["a-deleted", "b-bit-flipped", "c-truncated", "a-manifest-flipped"],
)
def test_one_damaged_copy_still_resumes_exactly(
    tmp_path: Path,
    interrupted: Path,
    reference: RunResult,
    store: str,
    damage: Callable[[Path], None],
) -> None:
    shutil.copytree(interrupted, tmp_path, dirs_exist_ok=True)
    config = replicated_config(tmp_path)
    damage(tmp_path / store / NEWEST)

    newest = build_store(config.checkpoint, tmp_path / "a").latest_valid()
    resumed = Simulation(config).run(checkpoint_dir=tmp_path / "a", resume=True)

    assert newest is not None and newest.round == 2
    assert resumed.params.numpy().tobytes() == reference.params.numpy().tobytes()
    assert without_wall_time(resumed.history) == without_wall_time(reference.history)


def test_the_damaged_copy_is_listed_with_its_store(tmp_path: Path, interrupted: Path) -> None:
    shutil.copytree(interrupted, tmp_path, dirs_exist_ok=True)
    flip_params(tmp_path / "b" / NEWEST)

    infos = build_store(replicated_config(tmp_path).checkpoint, tmp_path / "a").list()

    newest = infos[-1]
    assert (newest.round, newest.valid) == (2, True)
    assert newest.stores == (str(tmp_path / "a"), str(tmp_path / "c"))
    assert newest.problem is not None
    assert newest.problem.startswith(str(tmp_path / "b")) and "params.safetensors" in newest.problem
    assert all(info.problem is None and len(info.stores) == 3 for info in infos[:-1])


def blocked_stores(tmp_path: Path, failing: int) -> list[LocalCheckpointStore]:
    """Three local stores; the first ``failing`` sit where a regular file is (mkdir fails)."""
    stores = []
    for index, name in enumerate(STORES):
        root = tmp_path / name
        if index < failing:
            root.write_text("not a directory")
        stores.append(LocalCheckpointStore(root))
    return stores


def test_a_save_with_one_failed_store_meets_the_quorum(tmp_path: Path) -> None:
    store = ReplicatedCheckpointStore(blocked_stores(tmp_path, failing=1), write_quorum=2)

    ref = store.save(make_state(1))

    assert ref == "round-00000001"
    assert store.list()[0].stores == (str(tmp_path / "b"), str(tmp_path / "c"))


def test_two_failed_stores_fail_the_save_naming_each(tmp_path: Path) -> None:
    store = ReplicatedCheckpointStore(blocked_stores(tmp_path, failing=2), write_quorum=2)

    with pytest.raises(CheckpointError) as caught:
        store.save(make_state(1))

    message = str(caught.value)
    assert "reached 1 of 3 stores, below the write quorum of 2" in message
    assert f"{tmp_path / 'a'}: cannot write" in message
    assert f"{tmp_path / 'b'}: cannot write" in message


def test_a_store_raising_oserror_counts_as_failed(tmp_path: Path) -> None:
    class Broken(LocalCheckpointStore):
        def save(self, state: ServerState, *, prune: bool = True) -> str:
            raise OSError("disk gone")

    stores = [Broken(tmp_path / "a"), Broken(tmp_path / "b"), LocalCheckpointStore(tmp_path / "c")]

    with pytest.raises(CheckpointError, match="disk gone"):
        ReplicatedCheckpointStore(stores, write_quorum=2).save(make_state(1))


def test_a_simulation_stops_when_its_checkpoint_misses_the_quorum(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    for name in STORES[1:]:
        (tmp_path / name).write_text("not a directory")
    committed: list[int] = []

    with pytest.raises(CheckpointError, match="below the write quorum of 2"):
        Simulation(config).run(
            checkpoint_dir=tmp_path / "a", on_round=[lambda s, r: committed.append(r.round)]
        )

    assert committed == []  # the first round's checkpoint failed: no observer heard of it


def test_a_run_starts_with_a_replica_unreachable_while_the_quorum_holds(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("not a directory")  # one replica of three gone; quorum 2

    result = Simulation(replicated_config(tmp_path)).run(checkpoint_dir=tmp_path / "a")

    assert result.state.round == 4
    for name in ("a", "b"):  # each save reached the two stores that remain
        assert (tmp_path / name / "round-00000004").is_dir()
    assert (tmp_path / "a" / "history.jsonl").is_file()  # beside the checkpoints, adopted


def test_phalanx_run_fails_loudly_without_a_summary(tmp_path: Path) -> None:
    for name in STORES[1:]:
        (tmp_path / name).write_text("not a directory")
    replicas = ",".join(f'"{tmp_path / name}"' for name in STORES[1:])
    command = [
        sys.executable, "-m", "phalanx", "run", "--out", str(tmp_path / "run"), "--quiet",
        "--set", "rounds=2", "--set", "workload.num_clients=4",
        "--set", "workload.samples_per_client=20", "--set", "selection.clients_per_round=3",
        "--set", "quorum.min_updates=2", "--set", "checkpoint.every=1",
        "--set", f"checkpoint.stores=[{replicas}]", "--set", "checkpoint.write_quorum=2",
    ]  # fmt: skip

    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == CheckpointError.exit_code, done.stderr
    assert "below the write quorum of 2" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_quorum_must_be_reachable() -> None:
    with pytest.raises(ValueError, match="write_quorum"):
        CheckpointConfig(stores=("x",), write_quorum=3)
    with pytest.raises(ConfigError, match="W=0"):
        ReplicatedCheckpointStore([LocalCheckpointStore(Path("x"))], write_quorum=0)


def test_the_same_directory_twice_is_refused(tmp_path: Path) -> None:
    config = CheckpointConfig(stores=(str(tmp_path / "a" / ".." / "a"),))

    with pytest.raises(ConfigError, match="distinct"):
        build_store(config, tmp_path / "a")


def test_without_replicas_the_store_is_the_run_directory(tmp_path: Path) -> None:
    store = build_store(CheckpointConfig(keep=2, keep_every=5), tmp_path)

    assert isinstance(store, LocalCheckpointStore)
    assert (store.root, store.keep, store.keep_every) == (tmp_path, 2, 5)


def test_a_lost_copy_in_every_store_but_one_still_loads(tmp_path: Path) -> None:
    stores = [LocalCheckpointStore(tmp_path / name) for name in STORES]
    store = ReplicatedCheckpointStore(stores, write_quorum=2)
    store.save(make_state(3))
    for name in STORES[:2]:
        shutil.rmtree(tmp_path / name / "round-00000003")

    loaded = store.load("round-00000003")

    assert torch.equal(loaded.params, make_state(3).params)


class FullStore(LocalCheckpointStore):
    """A local store whose disk fills up when ``full`` is set: saves fail as ENOSPC would."""

    full = False

    def save(self, state: ServerState, *, prune: bool = True) -> str:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().save(state, prune=prune)


def full_stores(tmp_path: Path, **kw: int) -> list[FullStore]:
    return [FullStore(tmp_path / name, **kw) for name in STORES]


def rounds_in(root: Path) -> list[int]:
    """The rounds of the checkpoint directories under ``root``, by name alone."""
    return sorted(int(path.name.removeprefix("round-")) for path in root.glob("round-*"))


def test_a_round_below_the_quorum_is_not_resumed_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = full_stores(tmp_path)
    store = ReplicatedCheckpointStore([a, b, c], write_quorum=2)
    store.save(make_state(1))
    b.full = c.full = True
    with pytest.raises(CheckpointError, match="reached 1 of 3 stores"):
        store.save(make_state(2))  # lands in a only

    with caplog.at_level(logging.WARNING, logger="phalanx.checkpoint"):
        latest = store.latest_valid()
    infos = store.list()

    assert rounds_in(tmp_path / "a") == [1, 2]
    assert latest is not None and latest.round == 1
    assert "round 2 is valid in 1 of 3 durable stores" in caplog.text
    assert "below the write quorum of 2" in caplog.text
    assert [(i.round, i.valid, i.committed) for i in infos] == [(1, True, True), (2, True, False)]
    assert infos[1].quorum == Quorum(copies=1, required=2, stores=3)


def test_a_supervisor_restarting_below_the_quorum_keeps_the_last_commit(tmp_path: Path) -> None:
    """c's disk is full from the start, b's fills after round 1: every restart resumes from
    round 1, the last commit, and no store prunes it away (keep=1 would, left to itself)."""
    a, b, c = full_stores(tmp_path, keep=1)
    c.full = True
    store = ReplicatedCheckpointStore([a, b, c], write_quorum=2)
    store.save(make_state(1))  # a + b: committed
    b.full = True
    resumed_from = []
    for _ in range(5):  # a supervisor restarting the run after each failure
        state = store.latest_valid()
        assert state is not None
        resumed_from.append(state.round)
        with pytest.raises(CheckpointError, match="below the write quorum"):
            store.save(make_state(state.round + 1))

    assert resumed_from == [1, 1, 1, 1, 1]
    assert rounds_in(tmp_path / "a") == [1, 2] and rounds_in(tmp_path / "b") == [1]
    b.full = False  # the disk is freed: the next save commits, and only then prunes
    store.save(make_state(2))
    assert rounds_in(tmp_path / "a") == [2] and rounds_in(tmp_path / "b") == [2]


def test_pruning_spares_the_newest_commit_in_every_store(tmp_path: Path) -> None:
    a, b, c = full_stores(tmp_path)
    c.full = True
    store = ReplicatedCheckpointStore([a, b, c], write_quorum=2)
    for round_ in (1, 2):
        store.save(make_state(round_))  # a + b: committed
    a.save(make_state(3))  # a's own newer round, as a failed replicated save leaves it

    store.prune(1)

    assert rounds_in(tmp_path / "a") == [2, 3]  # left to itself, a would keep only 3
    assert rounds_in(tmp_path / "b") == [2]
    latest = store.latest_valid()
    assert latest is not None and latest.round == 2


def memory_url() -> str:
    return f"memory://phalanx-replicated/{uuid.uuid4().hex}"


def test_a_memory_store_never_counts_toward_the_quorum(tmp_path: Path) -> None:
    a, b = FullStore(tmp_path / "a"), FullStore(tmp_path / "b")
    store = ReplicatedCheckpointStore([a, b, FsspecCheckpointStore(memory_url())], write_quorum=2)
    b.full = True

    with pytest.raises(CheckpointError, match="reached 1 of 3 stores"):
        store.save(make_state(1))  # a + memory://: one durable acknowledgement
    with pytest.raises(ConfigError, match="not durable"):
        ReplicatedCheckpointStore([a, FsspecCheckpointStore(memory_url())], write_quorum=2)


@pytest.mark.parametrize("quorum", [2, None])
def test_a_config_counting_on_a_memory_store_is_refused(quorum: int | None) -> None:
    with pytest.raises(ConfigError, match=r"memory://x is not durable"):
        build_config({"checkpoint": {"stores": ["memory://x"], "write_quorum": quorum}})

    assert build_config({"checkpoint": {"stores": ["memory://x"], "write_quorum": 1}})


def test_relative_store_paths_are_resolved_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = CheckpointConfig(
        stores=("replica", "../other", "/abs/r", "~/r", "file://rel", "s3://bucket/r")
    )

    resolved = config.resolved(tmp_path / "work")

    assert resolved.stores == (
        str(tmp_path / "work" / "replica"), str(tmp_path / "other"), "/abs/r",
        str(tmp_path / "home" / "r"), f"file://{tmp_path / 'work' / 'rel'}", "s3://bucket/r",
    )  # fmt: skip
    assert resolved.resolved(tmp_path / "elsewhere") == resolved


def test_a_resume_from_another_directory_uses_the_same_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    config = CheckpointConfig(stores=("replica",)).resolved(Path.cwd())  # as the run records it
    build_store(config, tmp_path / "run").save(make_state(1))
    monkeypatch.chdir(tmp_path / "second")  # the resume, from elsewhere

    build_store(config, tmp_path / "run").save(make_state(2))

    assert rounds_in(tmp_path / "first" / "replica") == [1, 2]
    assert not (tmp_path / "second" / "replica").exists()


def test_a_lost_store_under_a_full_quorum_says_how_to_resume(tmp_path: Path) -> None:
    stores = [LocalCheckpointStore(tmp_path / name) for name in STORES]
    ReplicatedCheckpointStore(stores).save(make_state(1))  # write_quorum None: all three
    shutil.rmtree(tmp_path / "c")  # c's disk is gone for good

    with pytest.raises(CheckpointError, match="valid in 2 of 3 durable stores") as caught:
        ReplicatedCheckpointStore(stores).latest_valid()
    lowered = ReplicatedCheckpointStore(stores, write_quorum=2).latest_valid()

    assert "resume with checkpoint.write_quorum set to the durable stores" in str(caught.value)
    assert lowered is not None and lowered.round == 1
