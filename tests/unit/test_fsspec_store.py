"""FsspecCheckpointStore's own rules (the shared ones are in tests/contract): without atomic
renames, the manifest written last is what makes a checkpoint complete."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from tests.contract.test_checkpoint_store import make_state

from phalanx.checkpoint import FsspecCheckpointStore
from phalanx.errors import ConfigError


@pytest.fixture
def url() -> Iterator[str]:
    url = f"memory://phalanx-unit/{uuid.uuid4().hex}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_refs_are_urls(url: str) -> None:
    ref = FsspecCheckpointStore(url).save(make_state(7))

    assert ref == f"memory:///{url.removeprefix('memory://')}/round-00000007"


def test_a_checkpoint_without_its_manifest_is_an_unfinished_write(url: str) -> None:
    store = FsspecCheckpointStore(url)
    store.save(make_state(1))
    store.save(make_state(2))
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(f"{root}/round-00000002/MANIFEST.json")  # as if the save died before it

    latest = store.latest_valid()
    listed = [info.round for info in store.list()]
    store.save(make_state(3))

    assert latest is not None and latest.round == 1
    assert listed == [1]
    assert not fs.exists(f"{root}/round-00000002")  # the next save cleared it away
    assert [info.round for info in store.list()] == [1, 3]


def test_an_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs://"):
        FsspecCheckpointStore("nosuchfs://bucket/run")


def test_a_file_url_save_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    FsspecCheckpointStore(f"file://{tmp_path}").save(make_state(3))

    checkpoint = tmp_path / "round-00000003"
    for name in ("params.safetensors", "state.json", "MANIFEST.json"):
        assert str(checkpoint / name) in synced, name
    assert str(checkpoint) in synced and str(tmp_path) in synced
    assert synced.index(str(checkpoint / "MANIFEST.json")) > synced.index(
        str(checkpoint / "state.json")
    )  # the manifest, which makes the checkpoint complete, is durable last


def test_only_a_memory_store_is_not_durable(tmp_path: Path, url: str) -> None:
    assert FsspecCheckpointStore(url).durable is False
    assert FsspecCheckpointStore(f"file://{tmp_path}").durable is True


def test_an_unfinished_save_beside_a_foreign_round_directory(url: str) -> None:
    """A manifest-less round directory is cleared only when it holds checkpoint files."""
    store = FsspecCheckpointStore(url)
    store.save(make_state(1))
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/round-00000002/params.safetensors", b"partial")  # died mid-save
    fs.pipe_file(f"{root}/round-00000003/notes.txt", b"mine")  # a user's own directory

    store.save(make_state(4))

    assert not fs.exists(f"{root}/round-00000002")
    assert fs.cat_file(f"{root}/round-00000003/notes.txt") == b"mine"
    assert store.rounds() == [1, 4]
