"""Checkpoints on any fsspec filesystem (object stores, ``memory://``, ``file://`` ...).

The on-disk format is the local store's (``phalanx.checkpoint.format``), but remote
filesystems promise no atomic rename, so completeness is marked differently: a save writes
the payload files first and ``MANIFEST.json`` last, and only a directory holding a manifest
is a checkpoint. A crash mid-save leaves a manifest-less directory that listings ignore and
the next save deletes; a torn or partly uploaded file fails its sha256 on read, and resuming
falls back to the newest checkpoint that verifies. Replacing a round's checkpoint deletes
the old manifest before anything else, so no mix of old and new files ever looks complete.

Foreign errors (``OSError`` and its kin, as fsspec backends raise them) become
``CheckpointError`` here, naming the URL and the file.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping
from typing import Any

from fsspec.core import url_to_fs

from phalanx.checkpoint.format import (
    MANIFEST_FILE,
    PAYLOAD_FILES,
    dir_name,
    encode,
    parse_dir_name,
    problem,
    read_verified,
)
from phalanx.checkpoint.store import CheckpointInfo, check_retention, retained
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
            fs, root = url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:  # unknown protocol, backend not installed
            raise ConfigError(f"cannot open checkpoint store {url!r}: {exc}") from exc
        self.fs: Any = fs
        self.root: str = root.rstrip("/") or "/"

    @property
    def location(self) -> str:
        return self.url

    def save(self, state: ServerState) -> str:
        """Write every payload file, then the manifest that marks the checkpoint complete."""
        files = encode(state)
        final = self._join(dir_name(state.round))
        try:
            self._remove_incomplete()
            if self.fs.exists(final):
                self._delete(final)
            self.fs.makedirs(final, exist_ok=True)
            for name in PAYLOAD_FILES:
                self.fs.pipe_file(f"{final}/{name}", files[name])
            self.fs.pipe_file(f"{final}/{MANIFEST_FILE}", files[MANIFEST_FILE])
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {self._url(final)}: {exc}") from exc
        self._prune(self.keep, protect=state.round)
        return self._url(final)

    def load(self, ref: str) -> ServerState:
        """Read and verify one checkpoint; ``ref`` is its URL or its bare directory name."""
        # _strip_protocol is fsspec's one way to map this filesystem's URLs to its paths.
        path = self._join(ref) if "/" not in ref else self.fs._strip_protocol(ref).rstrip("/")
        where = self._url(path)
        round_ = parse_dir_name(_basename(path))
        if round_ is None:
            raise CheckpointError(f"{where}: not a checkpoint directory (round-NNNNNNNN)")
        return read_verified(lambda name: self._read(path, name), where=where, round_=round_)

    def latest_valid(self) -> ServerState | None:
        """The newest checkpoint that verifies; None only when there are no checkpoints."""
        problems: builtins.list[str] = []
        for _, path in reversed(self._checkpoints()):
            try:
                return self.load(path)
            except CheckpointError as exc:
                logger.warning("skipping invalid checkpoint %s: %s", self._url(path), exc)
                problems.append(str(exc))
        if problems:
            raise CheckpointError(f"no valid checkpoint in {self.url}: " + "; ".join(problems))
        return None

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every complete checkpoint, oldest first, each fully verified."""
        return [self._inspect(round_, path) for round_, path in self._checkpoints()]

    def prune(self, keep: int) -> None:
        """Delete all but the ``keep`` newest checkpoints, sparing ``keep_every`` milestones."""
        self._prune(check_retention(keep, self.keep_every)[0], protect=None)

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
            round_ = parse_dir_name(_basename(entry["name"]))
            if round_ is not None and entry.get("type") == "directory":
                found.append((round_, str(entry["name"]).rstrip("/")))
        return sorted(found)

    def _prune(self, keep: int, *, protect: int | None) -> None:
        checkpoints = self._checkpoints()
        kept = retained((r for r, _ in checkpoints), keep=keep, keep_every=self.keep_every)
        doomed = [p for r, p in checkpoints if r not in kept and r != protect]
        for path in doomed:
            try:
                self._delete(path)
            except OSError as exc:
                raise CheckpointError(
                    f"cannot delete old checkpoint {self._url(path)}: {exc}"
                ) from exc
        if doomed:
            logger.debug("pruned %s old checkpoint(s) in %s", len(doomed), self.url)

    def _remove_incomplete(self) -> None:
        """Drop manifest-less round directories that an interrupted save left behind."""
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
