"""Checkpoints on any fsspec filesystem (object stores, ``memory://``, ``file://`` ...).

The on-disk format is the local store's (``phalanx.checkpoint.format``), but remote
filesystems promise no atomic rename, so completeness is marked differently: a save writes
the payload files first and ``MANIFEST.json`` last, and only a directory holding a manifest
is a checkpoint. A crash mid-save leaves a manifest-less directory that listings ignore and
the next save deletes; a torn or partly uploaded file fails its sha256 on read, and resuming
falls back to the newest checkpoint that verifies. Replacing a round's checkpoint deletes
the old manifest before anything else, so no mix of old and new files ever looks complete.

Durability. On the local filesystem (``file://``) each file is written through an fsynced
handle and the checkpoint directory and the root are fsynced, as in the local store, and the
root is locked like a local one. fsspec offers no fsync for other protocols: there a save is
as durable as the backend makes a completed ``pipe_file`` (object stores such as s3, gcs and
abfs acknowledge a PUT only once it is stored; sftp, smb or hdfs leave it to the server), and
``acquire`` locks nothing. ``memory://`` is not durable at all: ``durable`` is False, and a
replicated store never counts its copies toward the write quorum.

Like the local store, it writes a marker into the root, deletes only manifest-less round
directories of checkpoint files (its own unfinished saves) and prunes only its checkpoints.

Foreign errors (``OSError`` and its kin, as fsspec backends raise them) become
``CheckpointError`` here, naming the URL and the file.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from phalanx.checkpoint.format import (
    MANIFEST_FILE,
    PAYLOAD_FILES,
    dir_name,
    encode,
    parse_dir_name,
    problem,
    read_verified,
)
from phalanx.checkpoint.layout import (
    MARKER_FILE,
    Entries,
    RootLock,
    claim,
    is_checkpoint_dir,
    marker_bytes,
)
from phalanx.checkpoint.store import (
    CheckpointInfo,
    Reject,
    check_retention,
    doomed,
    newest_usable,
    verifies,
)
from phalanx.config import VOLATILE_PROTOCOLS
from phalanx.core.files import fsync_dir, write_atomic, write_synced
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError, ConfigError

logger = logging.getLogger("phalanx.checkpoint")


class FsspecCheckpointStore:
    """Keeps checkpoints under ``url`` on an fsspec filesystem, with the local store's
    retention (newest ``keep``, plus multiples of ``keep_every``). Its refs are URLs.

    ``storage_options`` go to the filesystem (credentials, timeouts, endpoints).
    """

    def __init__(
        self,
        url: str,
        *,
        keep: int = 3,
        keep_every: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.keep, self.keep_every = check_retention(keep, keep_every)
        try:
            # Imported here: only runs with a URL store pay for fsspec (a client node may not
            # have it: it is in the [server] extra).
            from fsspec.core import url_to_fs
            from fsspec.implementations.local import LocalFileSystem

            fs, root = url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:  # unknown protocol, backend not installed
            raise ConfigError(f"cannot open checkpoint store {url!r}: {exc}") from exc
        self.fs: Any = fs
        self.root: str = root.rstrip("/") or "/"
        self._local = isinstance(fs, LocalFileSystem)  # fsync and lock like a local store
        self._lock = RootLock(Path(self.root) if self._local else None)

    @property
    def location(self) -> str:
        return self.url

    @property
    def durable(self) -> bool:
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else self.fs.protocol
        return not VOLATILE_PROTOCOLS & set(protocols)

    def acquire(self) -> None:
        """Check the root is a phalanx store (or adopt it); on ``file://`` also lock it."""
        self._make_root()
        self._claim()
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def save(self, state: ServerState, *, prune: bool = True) -> str:
        """Write every payload file, then the manifest that marks the checkpoint complete."""
        files = encode(state)
        self._make_root()
        self._claim()  # before the lock: a foreign directory gets no lock file either
        with self._lock.during():
            ref = self._save(state.round, files)
            if prune:
                self._prune(self.keep, protect={state.round})
        return ref

    def _save(self, round_: int, files: dict[str, bytes]) -> str:
        final = self._join(dir_name(round_))
        try:
            self._remove_incomplete()
            if self.fs.exists(final):
                self._delete(final)
            self.fs.makedirs(final, exist_ok=True)
            for name in (*PAYLOAD_FILES, MANIFEST_FILE):  # the manifest last: it completes
                self._write(f"{final}/{name}", files[name])
            if self._local:
                fsync_dir(Path(final))
                fsync_dir(Path(self.root))
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {self._url(final)}: {exc}") from exc
        return self._url(final)

    def _write(self, path: str, data: bytes) -> None:
        """fsynced on the local filesystem; elsewhere as durable as the backend's upload."""
        if self._local:
            write_synced(Path(path), data)
        else:
            self.fs.pipe_file(path, data)

    def load(self, ref: str) -> ServerState:
        """Read and verify one checkpoint; ``ref`` is its URL or its bare directory name."""
        # _strip_protocol is fsspec's one way to map this filesystem's URLs to its paths.
        path = self._join(ref) if "/" not in ref else self.fs._strip_protocol(ref).rstrip("/")
        where = self._url(path)
        round_ = parse_dir_name(_basename(path))
        if round_ is None:
            raise CheckpointError(f"{where}: not a checkpoint directory (round-NNNNNNNN)")
        return read_verified(lambda name: self._read(path, name), where=where, round_=round_)

    def latest_valid(self, *, reject: Reject | None = None) -> ServerState | None:
        """The newest checkpoint that verifies (and that ``reject`` accepts); None only when
        there are no checkpoints."""
        return newest_usable(self.url, self.rounds(), self.load, reject)

    def rounds(self) -> builtins.list[int]:
        return [round_ for round_, _ in self._checkpoints()]

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every complete checkpoint, oldest first, each fully verified."""
        return [self._inspect(round_, path) for round_, path in self._checkpoints()]

    def prune(self, keep: int | None = None, *, protect: Collection[int] = ()) -> None:
        """Delete all but the ``keep`` newest checkpoints, sparing ``keep_every`` milestones,
        ``protect`` and the newest valid checkpoint."""
        keep = check_retention(self.keep if keep is None else keep, self.keep_every)[0]
        if self._exists(self.root):
            with self._lock.during():
                self._prune(keep, protect=protect)

    def _inspect(self, round_: int, path: str) -> CheckpointInfo:
        ref, size = self._url(path), self._size(path)
        try:
            self.load(path)
        except CheckpointError as exc:
            return CheckpointInfo(ref, round_, size, False, str(exc))
        return CheckpointInfo(ref, round_, size, True, None, (self.location,))

    def _size(self, path: str) -> int:
        """Bytes of the files in ``path``; 0 if it cannot be listed (``load`` says why)."""
        try:
            return sum(int(entry.get("size") or 0) for entry in self.fs.ls(path, detail=True))
        except OSError:
            return 0

    def _checkpoints(self) -> builtins.list[tuple[int, str]]:
        """(round, path) of every complete checkpoint (one with a manifest), oldest first."""
        return [(r, p) for r, p in self._round_dirs() if self._complete(p)]

    def _round_dirs(self) -> builtins.list[tuple[int, str]]:
        """(round, path) of every round-named directory, complete or not, oldest first."""
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []  # nothing saved yet
        except OSError as exc:
            raise CheckpointError(f"cannot list {self.url}: {exc}") from exc
        found = []
        for entry in entries:
            name, path = _basename(entry["name"]), str(entry["name"]).rstrip("/")
            round_ = parse_dir_name(name)
            if round_ is None or entry.get("type") != "directory":
                continue
            if is_checkpoint_dir(name, self._names(path)):  # a foreign one is not listed
                found.append((round_, path))
        return sorted(found)

    def _names(self, path: str) -> builtins.list[str]:
        try:
            return [_basename(child) for child in self.fs.ls(path, detail=False)]
        except OSError as exc:
            raise CheckpointError(f"cannot list {self._url(path)}: {exc}") from exc

    def _make_root(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoints to {self.url}: {exc}") from exc

    def _claim(self) -> None:
        """The root's marker checked, or written when adopting a root of phalanx entries."""
        marker = self._join(MARKER_FILE)
        try:
            claim(self.url, read_marker=lambda: self._read_marker(marker), entries=self._entries,
                  write_marker=lambda: self._write_marker(marker))  # fmt: skip
        except OSError as exc:
            raise CheckpointError(f"cannot mark checkpoint store {self.url}: {exc}") from exc

    def _read_marker(self, marker: str) -> bytes | None:
        return bytes(self.fs.cat_file(marker)) if self.fs.exists(marker) else None

    def _write_marker(self, marker: str) -> None:
        if self._local:
            write_atomic(Path(marker), marker_bytes())
        else:
            self.fs.pipe_file(marker, marker_bytes())  # one small object: whole or absent

    def _entries(self) -> Entries:
        found: builtins.list[tuple[str, builtins.list[str] | None]] = []
        for entry in self.fs.ls(self.root, detail=True):
            path = str(entry["name"]).rstrip("/")
            is_dir = entry.get("type") == "directory"
            found.append((_basename(path), self._names(path) if is_dir else None))
        return found

    def _prune(self, keep: int, *, protect: Collection[int]) -> None:
        checkpoints = dict(self._checkpoints())
        gone = doomed(checkpoints, keep=keep, keep_every=self.keep_every, protect=protect,
                      is_valid=lambda r: verifies(self.load, r))  # fmt: skip
        for round_ in gone:
            path = checkpoints[round_]
            try:
                self._delete(path)
            except OSError as exc:
                raise CheckpointError(
                    f"cannot delete old checkpoint {self._url(path)}: {exc}"
                ) from exc
        if gone:
            logger.debug("pruned %s old checkpoint(s) in %s", len(gone), self.url)

    def _remove_incomplete(self) -> None:
        """Drop manifest-less round directories of checkpoint files (``_round_dirs`` lists
        only those and complete ones) that an interrupted save left behind."""
        for _, path in self._round_dirs():
            if not self._complete(path):
                logger.info("removing incomplete checkpoint %s", self._url(path))
                self.fs.rm(path, recursive=True)

    def _delete(self, path: str) -> None:
        """Manifest first: an interrupted delete leaves an incomplete directory, never a
        checkpoint with some files missing that still claims to be whole."""
        manifest = f"{path}/{MANIFEST_FILE}"
        if self.fs.exists(manifest):
            self.fs.rm(manifest)
        self.fs.rm(path, recursive=True)

    def _complete(self, path: str) -> bool:
        return self._exists(f"{path}/{MANIFEST_FILE}")

    def _exists(self, path: str) -> bool:
        try:
            return bool(self.fs.exists(path))
        except OSError as exc:
            raise CheckpointError(f"cannot reach {self._url(path)}: {exc}") from exc

    def _read(self, path: str, name: str) -> bytes:
        """Whole-file read; a missing or unreadable file is a defect of the checkpoint."""
        try:
            return bytes(self.fs.cat_file(f"{path}/{name}"))
        except FileNotFoundError as exc:
            raise problem(self._url(path), name, "missing") from exc
        except OSError as exc:
            raise problem(self._url(path), name, f"unreadable ({exc})") from exc

    def _join(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def _url(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
