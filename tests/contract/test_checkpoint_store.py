"""One contract for every CheckpointStore: local, fsspec (memory:// and file://) and
replicated (three local stores, write quorum 2). Each implementation gets the same tests
through the ``harness`` fixture; only how a copy is damaged differs between them.

Beyond round trips and damage: a store touches only its own entries (foreign ``.tmp-*`` and
``round-*`` entries survive), refuses an unmarked root holding anything else, never prunes
its newest valid checkpoint, and (where it has a root to lock) refuses a second holder."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
import torch

from phalanx.checkpoint import (
    CheckpointStore,
    FsspecCheckpointStore,
    LocalCheckpointStore,
    ReplicatedCheckpointStore,
)
from phalanx.checkpoint.store import held
from phalanx.core.state import ClientHealth, ServerState
from phalanx.core.tensors import Manifest
from phalanx.errors import CheckpointError, ConfigError, LockedError
from phalanx.types import HealthState

FILES = ("params.safetensors", "state.json", "MANIFEST.json")


def make_state(round_: int) -> ServerState:
    """A small state whose every field differs by round, so a mix-up cannot pass."""
    return ServerState(
        round=round_,
        model_version=round_,
        params=torch.linspace(-1.0, 1.0, 6) * (round_ + 0.1),
        manifest=Manifest.of({"w": torch.zeros(2, 3)}),
        health={2: ClientHealth(0.5, HealthState.SIDELINED, sidelined_until=round_ + 2)},
        last_record={"round": round_ - 1, "committed": True},
        clock=0.25 * round_,
        config_digest="digest",
    )


def flip_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF  # 0xFF: makes any byte of the JSON files invalid UTF-8
    return bytes(damaged)


Damage = Callable[[bytes], bytes]
Factory = Callable[..., CheckpointStore]


@dataclass
class Harness:
    """A store factory (``keep``, ``keep_every``), the roots it writes (as fsspec paths) and
    whether it has a root lock and outlives the process."""

    make: Factory
    roots: list[tuple[fsspec.AbstractFileSystem, str]]
    lockable: bool = True
    durable: bool = True

    def damage(self, round_: int, name: str, how: Damage) -> None:
        """Damage ``name`` of round ``round_`` in every copy."""
        for fs, root in self.roots:
            path = f"{root}/{_dir(round_)}/{name}"
            fs.pipe_file(path, how(fs.cat_file(path)))

    def plant(self, name: str, *, directory: bool = False) -> None:
        """Put a user's own file (or a directory holding notes.txt) into every root."""
        for fs, root in self.roots:
            fs.makedirs(f"{root}/{name}" if directory else root, exist_ok=True)
            fs.pipe_file(f"{root}/{name}/notes.txt" if directory else f"{root}/{name}", b"mine")

    def exists(self, name: str) -> bool:
        """Whether ``name`` is in every root."""
        return all(fs.exists(f"{root}/{name}") for fs, root in self.roots)


def _dir(round_: int) -> str:
    return f"round-{round_:08d}"


def _local(tmp_path: Path) -> Harness:
    fs = fsspec.filesystem("file")
    return Harness(lambda **kw: LocalCheckpointStore(tmp_path, **kw), [(fs, str(tmp_path))])


def _fsspec(url: str) -> Harness:
    fs, root = fsspec.core.url_to_fs(url)
    durable = not url.startswith("memory://")
    factory = lambda **kw: FsspecCheckpointStore(url, **kw)  # noqa: E731
    return Harness(factory, [(fs, root)], lockable=durable, durable=durable)


def _replicated(tmp_path: Path) -> Harness:
    roots = [tmp_path / name for name in ("a", "b", "c")]

    def make(**kw: int | None) -> CheckpointStore:
        stores = [LocalCheckpointStore(root, **kw) for root in roots]  # type: ignore[arg-type]
        return ReplicatedCheckpointStore(stores, write_quorum=2)

    fs = fsspec.filesystem("file")
    return Harness(make, [(fs, str(root)) for root in roots])


@pytest.fixture(params=["local", "fsspec-memory", "fsspec-file", "replicated"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        yield _local(tmp_path)
    elif request.param == "fsspec-memory":
        url = f"memory://phalanx-contract/{uuid.uuid4().hex}/checkpoints"
        yield _fsspec(url)
        fs, root = fsspec.core.url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)
    elif request.param == "fsspec-file":
        yield _fsspec(f"file://{tmp_path}/checkpoints")
    else:
        yield _replicated(tmp_path)


def saved(harness: Harness, rounds: list[int], **kw: int | None) -> CheckpointStore:
    store = harness.make(**kw)
    for round_ in rounds:
        store.save(make_state(round_))
    return store


def test_is_a_checkpoint_store(harness: Harness) -> None:
    assert isinstance(harness.make(), CheckpointStore)


def test_round_trip_is_bit_identical(harness: Harness) -> None:
    store = harness.make()
    state = make_state(4)

    ref = store.save(state)
    loaded = store.load(ref)

    assert loaded.params.dtype == torch.float32
    assert loaded.params.numpy().tobytes() == state.params.numpy().tobytes()
    assert loaded.metadata_json() == state.metadata_json()
    assert loaded.health == state.health and loaded.manifest == state.manifest


def test_the_bare_directory_name_is_a_ref(harness: Harness) -> None:
    store = saved(harness, [3])

    assert store.load("round-00000003").metadata_json() == make_state(3).metadata_json()


def test_list_is_oldest_first_and_names_the_saved_refs(harness: Harness) -> None:
    store = harness.make()
    refs = [store.save(make_state(round_)) for round_ in (3, 1, 2)]

    infos = store.list()

    assert [info.round for info in infos] == [1, 2, 3]
    assert all(info.valid and info.problem is None and info.stores for info in infos)
    assert all(info.size_bytes > 0 for info in infos)
    assert {info.ref for info in infos} == set(refs)


def test_latest_valid_picks_the_newest_round(harness: Harness) -> None:
    store = saved(harness, [1, 5, 3])

    latest = store.latest_valid()

    assert latest is not None and latest.round == 5
    assert torch.equal(latest.params, make_state(5).params)


def test_resave_of_a_round_replaces_it(harness: Harness) -> None:
    store = saved(harness, [2])
    newer = make_state(2).with_changes(params=torch.full((6,), 7.0))

    store.save(newer)

    assert torch.equal(store.load("round-00000002").params, newer.params)
    assert [info.round for info in store.list()] == [2]


@pytest.mark.parametrize("name", FILES)
def test_a_corrupt_newest_falls_back_to_the_previous(
    harness: Harness, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = saved(harness, [1, 2])
    harness.damage(2, name, flip_byte)

    with caplog.at_level(logging.WARNING, logger="phalanx.checkpoint"):
        latest = store.latest_valid()
    infos = store.list()

    assert latest is not None and latest.round == 1
    assert [info.valid for info in infos] == [True, False]
    assert infos[1].problem is not None and name in infos[1].problem
    assert name in caplog.text
    with pytest.raises(CheckpointError, match=name):
        store.load(infos[1].ref)


def test_a_truncated_newest_falls_back_to_the_previous(harness: Harness) -> None:
    store = saved(harness, [1, 2])
    harness.damage(2, "params.safetensors", lambda data: data[: len(data) // 2])

    latest = store.latest_valid()

    assert latest is not None and latest.round == 1


def test_nothing_valid_is_an_error_naming_each_problem(harness: Harness) -> None:
    store = saved(harness, [1, 2])
    harness.damage(1, "state.json", flip_byte)
    harness.damage(2, "params.safetensors", flip_byte)

    with pytest.raises(CheckpointError) as caught:
        store.latest_valid()

    assert "state.json" in str(caught.value) and "params.safetensors" in str(caught.value)


def test_save_keeps_the_newest_k(harness: Harness) -> None:
    store = saved(harness, [1, 2, 3, 4], keep=2)

    assert [info.round for info in store.list()] == [3, 4]


def test_prune_keeps_the_newest_k(harness: Harness) -> None:
    store = saved(harness, [1, 2, 3])

    store.prune(1)

    assert [info.round for info in store.list()] == [3]


def test_keep_every_spares_every_nth_round(harness: Harness) -> None:
    store = saved(harness, [1, 2, 3, 4, 5, 6, 7], keep=2, keep_every=3)

    assert [info.round for info in store.list()] == [3, 6, 7]
    store.prune(1)
    assert [info.round for info in store.list()] == [3, 6, 7]


def test_an_empty_store_has_nothing(harness: Harness) -> None:
    store = harness.make()

    assert store.latest_valid() is None
    assert store.list() == []
    store.prune(1)


def test_a_saved_checkpoint_is_committed(harness: Harness) -> None:
    store = saved(harness, [1, 2])

    assert [info.committed for info in store.list()] == [True, True]
    assert store.durable is harness.durable


def test_the_first_save_marks_the_root(harness: Harness) -> None:
    saved(harness, [1])

    assert harness.exists(".phalanx-store.json")


def test_foreign_entries_survive_saves_and_pruning(harness: Harness) -> None:
    store = saved(harness, [1], keep=1)
    harness.plant(".tmp-notes")
    harness.plant(".tmp-round-00000007")  # not phalanx's exact temp name: no hex token
    harness.plant("round-foo", directory=True)
    harness.plant("round-00000000", directory=True)  # a round name, but not a checkpoint

    for round_ in (2, 3):
        store.save(make_state(round_))
    store.prune(1)

    for name in (".tmp-notes", ".tmp-round-00000007", "round-foo", "round-00000000"):
        assert harness.exists(name), name
    assert [info.round for info in store.list()] == [3]
    assert store.rounds() == [3]


def test_an_unmarked_root_holding_other_files_is_refused(harness: Harness) -> None:
    harness.plant("notes.txt")
    store = harness.make()

    with pytest.raises(ConfigError, match=r"not a phalanx checkpoint store.*notes\.txt"):
        store.save(make_state(1))

    for name in ("round-00000001", ".phalanx-store.json", ".phalanx.lock"):
        assert not any(fs.exists(f"{root}/{name}") for fs, root in harness.roots), name


def test_an_unmarked_root_of_phalanx_checkpoints_is_adopted(harness: Harness) -> None:
    saved(harness, [1])
    for fs, root in harness.roots:  # as a run from before markers existed left it
        fs.rm(f"{root}/.phalanx-store.json")

    harness.plant("history.jsonl")  # the run's log, kept in the root with no run directory

    store = saved(harness, [2])

    assert harness.exists(".phalanx-store.json") and harness.exists("history.jsonl")
    assert [info.round for info in store.list()] == [1, 2]


def test_a_marker_of_another_format_is_refused(harness: Harness) -> None:
    for fs, root in harness.roots:
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(f"{root}/.phalanx-store.json",
                     b'{"format": 99, "kind": "phalanx checkpoint store"}')  # fmt: skip

    with pytest.raises(CheckpointError, match="format 99"):
        harness.make().save(make_state(1))


def test_pruning_spares_the_newest_valid_checkpoint(harness: Harness) -> None:
    store = saved(harness, [1, 2, 3])
    harness.damage(2, "params.safetensors", flip_byte)
    harness.damage(3, "state.json", flip_byte)

    store.prune(1)

    assert [info.round for info in store.list()] == [1, 3]
    latest = store.latest_valid()
    assert latest is not None and latest.round == 1


def test_latest_valid_skips_what_the_caller_rejects(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    store = saved(harness, [1, 2, 3])

    def reject(state: ServerState) -> str | None:
        return "made with another configuration" if state.round == 3 else None

    with caplog.at_level(logging.WARNING, logger="phalanx.checkpoint"):
        latest = store.latest_valid(reject=reject)

    assert latest is not None and latest.round == 2
    assert "another configuration" in caplog.text
    with pytest.raises(CheckpointError, match="another configuration"):
        store.latest_valid(reject=lambda state: "made with another configuration")


def test_a_store_in_use_refuses_a_second_holder(harness: Harness) -> None:
    if not harness.lockable:
        pytest.skip("nothing to lock: its files live only in this process")
    first, second = harness.make(), harness.make()
    first.acquire()
    try:
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            second.acquire()
        with pytest.raises(LockedError, match="checkpoint store"):
            second.save(make_state(1))
        first.save(make_state(2))  # the holder writes on
        assert [info.round for info in second.list()] == [2]  # reading needs no lock
        latest = second.latest_valid()
        assert latest is not None and latest.round == 2
    finally:
        first.release()

    with held(second):
        second.save(make_state(3))
    assert [info.round for info in first.list()] == [2, 3]
