"""Checkpoints in a local directory, written atomically and verified on every read.

A save writes all files into ``root/.tmp-round-XXXXXXXX-<token>/``, fsyncs each file and the
directory, renames it to ``round-XXXXXXXX`` and fsyncs ``root``: a crash leaves either the
old set of checkpoints or the new one, plus at worst a ``.tmp-*`` directory that listings
ignore and the next save removes. Reads trust nothing on disk: every file is checked against
MANIFEST.json, and resuming falls back to the newest checkpoint that passes.

The root is phalanx's alone only as far as ``layout`` says: it carries a marker, cleanup
removes only phalanx's exact temp names, and pruning only phalanx's round directories. A run
holds the root's ``DirectoryLock`` (``acquire``/``release``); a save or prune outside such a
hold takes the lock for its own duration.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import shutil
from collections.abc import Collection
from pathlib import Path

from phalanx.checkpoint.crashpoints import crash_point
from phalanx.checkpoint.format import (
    MANIFEST_FILE,
    PARAMS_FILE,
    PAYLOAD_FILES,
    STATE_FILE,
    decode,
    dir_name,
    encode,
    parse_dir_name,
    parse_manifest,
    problem,
    verify,
)
from phalanx.checkpoint.layout import (
    MARKER_FILE,
    TMP_PREFIX,
    Entries,
    RootLock,
    claim,
    is_checkpoint_dir,
    is_temp,
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
from phalanx.core.files import fsync_dir, write_atomic, write_synced
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError

logger = logging.getLogger("phalanx.checkpoint")

# The crash point reached once each file of a checkpoint is written and fsynced.
_AFTER_WRITE = {
    PARAMS_FILE: "checkpoint.after_tensors",
    STATE_FILE: "checkpoint.after_state",
    MANIFEST_FILE: "checkpoint.after_manifest",
}


class LocalCheckpointStore:
    """Keeps the newest ``keep`` checkpoints of a ``ServerState`` under ``root``, and every
    round that is a multiple of ``keep_every`` (when set). A ``CheckpointStore``: its refs
    are checkpoint directory paths, as strings."""

    def __init__(self, root: Path, *, keep: int = 3, keep_every: int | None = None) -> None:
        self.root = Path(root)
        self.keep, self.keep_every = check_retention(keep, keep_every)
        self._lock = RootLock(self.root)

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def durable(self) -> bool:
        return True

    def acquire(self) -> None:
        """Create the root if needed, check it is a phalanx store (or adopt it), lock it."""
        self._make_root()
        self._claim()  # before the lock: a foreign directory gets no lock file either
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def save(self, state: ServerState, *, prune: bool = True) -> str:
        """Write ``state`` atomically (replacing a checkpoint of the same round), then prune."""
        files = encode(state)
        self._make_root()
        self._claim()  # before the lock: a foreign directory gets no lock file either
        with self._lock.during():
            ref = self._save(state.round, files)
            if prune:
                self._prune(self.keep, protect={state.round})
            crash_point("checkpoint.after_prune")
        return ref

    def _save(self, round_: int, files: dict[str, bytes]) -> str:
        final = self.root / dir_name(round_)
        try:
            self._remove_leftovers()
            tmp = self.root / f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}"
            tmp.mkdir()
            crash_point("checkpoint.after_tmp_dir")
            for name, data in files.items():
                write_synced(tmp / name, data)
                crash_point(_AFTER_WRITE[name])
            fsync_dir(tmp)
            crash_point("checkpoint.before_rename")
            self._publish(tmp, final)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {final}: {exc}") from exc
        return str(final)

    def load(self, ref: str | Path) -> ServerState:
        """Read and verify one checkpoint; any defect raises CheckpointError naming the file.

        ``ref`` is a checkpoint directory's path, or its bare name (``round-00000042``) taken
        relative to ``root``."""
        path = Path(ref)
        if path.name == str(ref):
            path = self.root / path
        where = str(path)
        round_ = parse_dir_name(path.name)
        if round_ is None:
            raise CheckpointError(f"{where}: not a checkpoint directory (round-NNNNNNNN)")
        manifest = parse_manifest(_read(path, MANIFEST_FILE), where=where)
        if manifest.round != round_:
            raise problem(where, MANIFEST_FILE, f"round {manifest.round} != directory {round_}")
        payload = {name: _read(path, name) for name in PAYLOAD_FILES}
        for name, data in payload.items():
            verify(name, data, manifest, where=where)
        return decode(manifest, payload, where=where)

    def latest_valid(self, *, reject: Reject | None = None) -> ServerState | None:
        """The newest checkpoint that verifies (and that ``reject`` accepts); None only when
        there are no checkpoints."""
        return newest_usable(self.location, self.rounds(), self.load, reject)

    def rounds(self) -> builtins.list[int]:
        return [_round_of(path) for path in self._checkpoint_dirs()]

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every checkpoint directory, oldest first, each fully verified."""
        return [self._inspect(path) for path in self._checkpoint_dirs()]

    def prune(self, keep: int | None = None, *, protect: Collection[int] = ()) -> None:
        """Delete all but the ``keep`` newest checkpoints (by round), valid or not, sparing
        the ``keep_every`` milestones, ``protect`` and the newest valid checkpoint."""
        keep = check_retention(self.keep if keep is None else keep, self.keep_every)[0]
        if self.root.is_dir():
            with self._lock.during():
                self._prune(keep, protect=protect)

    def _inspect(self, path: Path) -> CheckpointInfo:
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        try:
            self.load(path)
        except CheckpointError as exc:
            return CheckpointInfo(str(path), _round_of(path), size, False, str(exc))
        return CheckpointInfo(str(path), _round_of(path), size, True, None, (self.location,))

    def _checkpoint_dirs(self) -> builtins.list[Path]:
        """Checkpoint directories sorted by round; temp and foreign entries are not listed."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if parse_dir_name(p.name) is not None]
        ours = [p for p in found if p.is_dir() and is_checkpoint_dir(p.name, _names(p))]
        return sorted(ours, key=_round_of)

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoints to {self.root}: {exc}") from exc

    def _claim(self) -> None:
        """The root's marker checked, or written when adopting a root of phalanx entries."""
        marker = self.root / MARKER_FILE
        try:
            claim(
                self.location,
                read_marker=lambda: marker.read_bytes() if marker.exists() else None,
                entries=self._entries,
                write_marker=lambda: write_atomic(marker, marker_bytes()),
            )
        except OSError as exc:
            raise CheckpointError(f"cannot mark checkpoint store {self.root}: {exc}") from exc

    def _entries(self) -> Entries:
        return [(p.name, _names(p) if p.is_dir() else None) for p in self.root.iterdir()]

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside, then deleted."""
        aside = None
        if final.exists():
            aside = self.root / f"{TMP_PREFIX}old-{final.name}-{secrets.token_hex(4)}"
            os.rename(final, aside)
        try:
            os.rename(tmp, final)
        except OSError:
            if aside is not None:
                os.rename(aside, final)
            raise
        crash_point("checkpoint.after_rename")
        fsync_dir(self.root)
        if aside is not None:
            shutil.rmtree(aside)

    def _prune(self, keep: int, *, protect: Collection[int]) -> None:
        """Delete old checkpoints; ``protect`` (the one just saved) survives even if older."""
        rounds = self.rounds()
        gone = doomed(rounds, keep=keep, keep_every=self.keep_every, protect=protect,
                      is_valid=lambda r: verifies(self.load, r))  # fmt: skip
        for round_ in gone:
            path = self.root / dir_name(round_)
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise CheckpointError(f"cannot delete old checkpoint {path}: {exc}") from exc
        if gone:
            logger.debug("pruned %s old checkpoint(s) in %s", len(gone), self.root)

    def _remove_leftovers(self) -> None:
        """Drop what crashed saves left behind: only names of phalanx's temp patterns."""
        for path in self.root.iterdir():
            if is_temp(path.name):
                logger.info("removing leftover %s", path)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _names(path: Path) -> builtins.list[str]:
    try:
        return [child.name for child in path.iterdir()]
    except OSError:
        return []


def _round_of(path: Path) -> int:
    round_ = parse_dir_name(path.name)
    return -1 if round_ is None else round_


def _read(path: Path, name: str) -> bytes:
    """Whole-file read; a missing or unreadable file is a defect of the checkpoint."""
    try:
        return (path / name).read_bytes()
    except FileNotFoundError as exc:
        raise problem(str(path), name, "missing") from exc
    except OSError as exc:
        raise problem(str(path), name, f"unreadable ({exc.strerror or exc})") from exc
