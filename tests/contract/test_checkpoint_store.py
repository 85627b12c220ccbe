"""One contract for every CheckpointStore: local, fsspec (memory:// and file://) and
replicated (three local stores, write quorum 2). Each implementation gets the same tests
through the ``harness`` fixture; only how a copy is damaged differs between them."""

from __future__ import annotations

import logging
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
from phalanx.core.state import ClientHealth, ServerState
from phalanx.core.tensors import Manifest
from phalanx.errors import CheckpointError
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
    """A store factory (``keep``, ``keep_every``) and a way to damage a round's files."""

    make: Factory
    damage: Callable[[int, str, Damage], None]  # (round, file, how): every copy of it


def _dir(round_: int) -> str:
    return f"round-{round_:08d}"


def _local(tmp_path: Path) -> Harness:
    def damage(round_: int, name: str, how: Damage) -> None:
        path = tmp_path / _dir(round_) / name
        path.write_bytes(how(path.read_bytes()))

    return Harness(lambda **kw: LocalCheckpointStore(tmp_path, **kw), damage)


def _fsspec(url: str) -> Harness:
    fs, root = fsspec.core.url_to_fs(url)

    def damage(round_: int, name: str, how: Damage) -> None:
        path = f"{root}/{_dir(round_)}/{name}"
        fs.pipe_file(path, how(fs.cat_file(path)))

    return Harness(lambda **kw: FsspecCheckpointStore(url, **kw), damage)


def _replicated(tmp_path: Path) -> Harness:
    roots = [tmp_path / name for name in ("a", "b", "c")]

    def make(**kw: int | None) -> CheckpointStore:
        stores = [LocalCheckpointStore(root, **kw) for root in roots]  # type: ignore[arg-type]
        return ReplicatedCheckpointStore(stores, write_quorum=2)

    def damage(round_: int, name: str, how: Damage) -> None:
        for root in roots:
            path = root / _dir(round_) / name
            path.write_bytes(how(path.read_bytes()))

    return Harness(make, damage)


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
