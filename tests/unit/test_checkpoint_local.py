"""LocalCheckpointStore: atomic writes, pruning, and detection of every kind of damage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from phalanx.checkpoint import CheckpointInfo, LocalCheckpointStore
from phalanx.core.state import ClientHealth, ServerState
from phalanx.core.tensors import Manifest
from phalanx.errors import CheckpointError, ConfigError, LockedError
from phalanx.types import HealthState

FILES = ["params.safetensors", "state.json", "MANIFEST.json"]


def make_state(round_: int) -> ServerState:
    return ServerState(
        round=round_,
        model_version=round_ - 1,
        params=torch.arange(6.0) + round_,
        manifest=Manifest.of({"w": torch.zeros(2, 3)}),
        health={
            0: ClientHealth(),
            3: ClientHealth(0.25, HealthState.SIDELINED, sidelined_until=7, cooldown=2),
        },
        last_record={"round": round_ - 1, "committed": True},
        clock=12.5,
        config_digest="abc",
        extra={"note": "x"},
    )


def saved_store(tmp_path: Path, rounds: list[int], keep: int = 3) -> LocalCheckpointStore:
    store = LocalCheckpointStore(tmp_path, keep=keep)
    for round_ in rounds:
        store.save(make_state(round_))
    return store


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    state = make_state(4)

    ref = store.save(state)
    loaded = store.load(ref)

    assert ref == str(tmp_path / "round-00000004")
    assert torch.equal(loaded.params, state.params)
    assert loaded.params.dtype == torch.float32
    assert loaded.manifest == state.manifest
    assert loaded.health == state.health
    assert loaded.last_record == state.last_record
    assert loaded.metadata_json() == state.metadata_json()


def test_manifest_lists_digests_and_sizes(tmp_path: Path) -> None:
    path = Path(LocalCheckpointStore(tmp_path).save(make_state(2)))

    manifest = json.loads((path / "MANIFEST.json").read_text())

    assert manifest["format"] == 1
    assert manifest["round"] == 2
    assert sorted(manifest["files"]) == ["params.safetensors", "state.json"]
    assert manifest["sizes"]["state.json"] == (path / "state.json").stat().st_size


def test_save_leaves_no_temp_dirs(tmp_path: Path) -> None:
    saved_store(tmp_path, [1, 2])

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".phalanx-store.json", ".phalanx.lock", "round-00000001", "round-00000002"
    ]  # fmt: skip


def test_resave_same_round_replaces_it(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [5])
    newer = make_state(5).with_changes(params=torch.full((6,), 9.0))

    store.save(newer)

    assert torch.equal(store.load(tmp_path / "round-00000005").params, newer.params)
    assert [p.name for p in tmp_path.glob("round-*")] == ["round-00000005"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_keep_two_keeps_the_newest_two(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [1, 2, 3, 4], keep=2)

    assert [info.round for info in store.list()] == [3, 4]


def test_prune_removes_older_checkpoints(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [1, 2, 3])

    store.prune(1)

    assert [info.round for info in store.list()] == [3]


def test_keep_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep=0"):
        LocalCheckpointStore(tmp_path, keep=0)
    with pytest.raises(ConfigError, match="keep_every=0"):
        LocalCheckpointStore(tmp_path, keep_every=0)


def test_keep_every_spares_milestone_rounds(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path, keep=2, keep_every=3)
    for round_ in range(1, 9):
        store.save(make_state(round_))

    assert [info.round for info in store.list()] == [3, 6, 7, 8]
    store.prune(1)
    assert [info.round for info in store.list()] == [3, 6, 8]


def test_load_takes_a_path_or_a_bare_directory_name(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [2])

    by_name = store.load("round-00000002")
    by_path = store.load(tmp_path / "round-00000002")

    assert by_name.metadata_json() == by_path.metadata_json() == make_state(2).metadata_json()


def test_list_is_oldest_first_and_valid(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [3, 1, 2])

    infos = store.list()

    assert [info.round for info in infos] == [1, 2, 3]
    assert all(info.valid and info.problem is None for info in infos)
    assert infos[0] == CheckpointInfo(
        str(tmp_path / "round-00000001"),
        1,
        sum(f.stat().st_size for f in (tmp_path / "round-00000001").iterdir()),
        True,
        None,
        (str(tmp_path),),
    )


@pytest.mark.parametrize("damage", [truncate, flip_byte], ids=["truncated", "flipped"])
@pytest.mark.parametrize("name", FILES)
def test_damage_is_detected_and_skipped(
    tmp_path: Path, name: str, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    store = saved_store(tmp_path, [1, 2])
    damage(tmp_path / "round-00000002" / name)

    infos = store.list()
    with caplog.at_level(logging.WARNING, logger="phalanx.checkpoint"):
        resumed = store.latest_valid()

    assert [info.valid for info in infos] == [True, False]
    assert infos[1].problem is not None and name in infos[1].problem
    assert resumed is not None and resumed.round == 1
    assert "round-00000002" in caplog.text and name in caplog.text
    with pytest.raises(CheckpointError, match=name):
        store.load(tmp_path / "round-00000002")


@pytest.mark.parametrize("name", FILES)
def test_missing_file_is_detected(tmp_path: Path, name: str) -> None:
    store = saved_store(tmp_path, [1, 2])
    (tmp_path / "round-00000002" / name).unlink()

    infos = store.list()
    resumed = store.latest_valid()

    assert infos[1].problem is not None and f"{name}: missing" in infos[1].problem
    assert resumed is not None and resumed.round == 1


def test_truncated_params_named_as_truncated(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [1])
    truncate(tmp_path / "round-00000001" / "params.safetensors")

    with pytest.raises(CheckpointError, match=r"params\.safetensors: truncated"):
        store.load(tmp_path / "round-00000001")


def test_state_round_must_match_directory(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [1])
    (tmp_path / "round-00000001").rename(tmp_path / "round-00000007")

    with pytest.raises(CheckpointError, match="directory 7"):
        store.load(tmp_path / "round-00000007")


def test_leftover_temp_dir_is_ignored_then_removed(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [1])
    leftover = tmp_path / ".tmp-round-00000002-deadbeef"
    leftover.mkdir()
    (leftover / "params.safetensors").write_bytes(b"partial")

    assert [info.round for info in store.list()] == [1]
    latest = store.latest_valid()
    assert latest is not None and latest.round == 1

    store.save(make_state(2))
    assert not leftover.exists()


def test_all_invalid_raises_listing_each_problem(tmp_path: Path) -> None:
    store = saved_store(tmp_path, [1, 2])
    flip_byte(tmp_path / "round-00000001" / "state.json")
    (tmp_path / "round-00000002" / "params.safetensors").unlink()

    with pytest.raises(CheckpointError) as caught:
        store.latest_valid()

    assert "round-00000001/state.json: digest mismatch" in str(caught.value)
    assert "round-00000002/params.safetensors: missing" in str(caught.value)


@pytest.mark.parametrize("exists", [True, False], ids=["empty", "absent"])
def test_no_checkpoints_gives_none(tmp_path: Path, exists: bool) -> None:
    root = tmp_path if exists else tmp_path / "nowhere"

    store = LocalCheckpointStore(root)

    assert store.latest_valid() is None
    assert store.list() == []


def test_non_float32_params_are_refused(tmp_path: Path) -> None:
    state = make_state(1).with_changes(params=torch.arange(6, dtype=torch.float64))

    with pytest.raises(CheckpointError, match="float32"):
        LocalCheckpointStore(tmp_path).save(state)
    assert list(tmp_path.iterdir()) == []


HOLD_THE_STORE = """
import sys
from pathlib import Path
from phalanx.checkpoint import LocalCheckpointStore

root = Path(sys.argv[1])
LocalCheckpointStore(root).acquire()
(root / ".tmp-round-00000005-0123abcd").mkdir()  # its save of round 5, in progress
print("holding", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_a_second_process_is_refused_and_spares_the_save_in_progress(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_STORE, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        store = LocalCheckpointStore(tmp_path)

        with pytest.raises(
            LockedError, match=f"in use as a checkpoint store directory by pid {holder.pid}"
        ):
            store.save(make_state(6))
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            store.acquire()
        assert (tmp_path / ".tmp-round-00000005-0123abcd").is_dir()
        assert store.list() == []  # reading needs no lock
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()

    store.save(make_state(6))  # the holder is gone: its leftover is cleaned up
    assert not (tmp_path / ".tmp-round-00000005-0123abcd").exists()
    assert [info.round for info in store.list()] == [6]


def test_a_store_under_a_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    with pytest.raises(CheckpointError, match="cannot write checkpoints to"):
        LocalCheckpointStore(tmp_path / "file" / "store").acquire()


def test_aggregator_state_of_every_allowed_dtype_round_trips(tmp_path: Path) -> None:
    """A per-client table carries int64 ids and float64 scores beside float32 vectors."""
    state = make_state(3).with_changes(
        tensors={
            "centre": torch.arange(4, dtype=torch.float32),
            "flags.clients": torch.tensor([2, 7, 2**40], dtype=torch.int64),
            "flags.scores": torch.tensor([0.5, 1.25, 1e-300], dtype=torch.float64),
        }
    )
    store = LocalCheckpointStore(tmp_path / "ckpt")
    loaded = store.load(store.save(state))
    for key, tensor in state.tensors.items():
        assert loaded.tensors[key].dtype == tensor.dtype and torch.equal(
            loaded.tensors[key], tensor
        )


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(2, 2), torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=torch.int8)],
)
def test_aggregator_state_must_be_a_flat_vector_of_an_allowed_dtype(
    tmp_path: Path, bad: torch.Tensor
) -> None:
    state = make_state(3).with_changes(tensors={"x": bad})
    with pytest.raises(CheckpointError, match="float32, float64 or int64 vector"):
        LocalCheckpointStore(tmp_path / "ckpt").save(state)
