"""Checkpoints in a local directory, written atomically and verified on every read.

A save writes all files into ``root/.tmp-round-XXXXXXXX-<token>/``, fsyncs each file and the
directory, renames it to ``round-XXXXXXXX`` and fsyncs ``root``: a crash leaves either the
old set of checkpoints or the new one, plus at worst a ``.tmp-*`` directory that listings
ignore and the next save removes. Reads trust nothing on disk: every file is checked against
MANIFEST.json, and resuming falls back to the newest checkpoint that passes.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import shutil
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
from phalanx.checkpoint.store import CheckpointInfo, check_retention, retained
from phalanx.core.files import fsync_dir, write_synced
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError

logger = logging.getLogger("phalanx.checkpoint")

_TMP_PREFIX = ".tmp-"

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

    @property
    def location(self) -> str:
        return str(self.root)

    def save(self, state: ServerState) -> str:
        """Write ``state`` atomically (replacing a checkpoint of the same round), then prune."""
        files = encode(state)
        final = self.root / dir_name(state.round)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            tmp = self.root / f"{_TMP_PREFIX}{final.name}-{secrets.token_hex(4)}"
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
        self._prune(self.keep, protect=final)
        crash_point("checkpoint.after_prune")
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

    def latest_valid(self) -> ServerState | None:
        """The newest checkpoint that verifies; None only when there are no checkpoints."""
        problems: list[str] = []
        for path in reversed(self._checkpoint_dirs()):
            try:
                return self.load(path)
            except CheckpointError as exc:
                logger.warning("skipping invalid checkpoint %s: %s", path, exc)
                problems.append(str(exc))
        if problems:
            raise CheckpointError(f"no valid checkpoint in {self.root}: " + "; ".join(problems))
        return None

    def list(self) -> list[CheckpointInfo]:
        """Every checkpoint directory, oldest first, each fully verified."""
        return [self._inspect(path) for path in self._checkpoint_dirs()]

    def prune(self, keep: int) -> None:
        """Delete all but the ``keep`` newest checkpoints (by round), valid or not, sparing
        the ``keep_every`` milestones."""
        self._prune(check_retention(keep, self.keep_every)[0], protect=None)

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
        return sorted((p for p in found if p.is_dir()), key=_round_of)

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside, then deleted."""
        aside = None
        if final.exists():
            aside = self.root / f"{_TMP_PREFIX}old-{final.name}-{secrets.token_hex(4)}"
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

    def _prune(self, keep: int, *, protect: Path | None) -> None:
        """Delete old checkpoints; ``protect`` (the one just saved) survives even if older."""
        dirs = self._checkpoint_dirs()
        kept = retained(map(_round_of, dirs), keep=keep, keep_every=self.keep_every)
        doomed = [p for p in dirs if _round_of(p) not in kept and p != protect]
        for path in doomed:
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise CheckpointError(f"cannot delete old checkpoint {path}: {exc}") from exc
        if doomed:
            logger.debug("pruned %s old checkpoint(s) in %s", len(doomed), self.root)

    def _remove_leftovers(self) -> None:
        """Drop ``.tmp-*`` directories that a crashed save left behind."""
        for path in self.root.glob(f"{_TMP_PREFIX}*"):
            logger.info("removing leftover %s", path)
            shutil.rmtree(path, ignore_errors=True)


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
