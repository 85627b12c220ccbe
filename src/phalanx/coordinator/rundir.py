"""A run directory: what it holds, who may use it, and how it starts.

A run directory holds ``config.json`` (the configuration, written once before the first
round), ``run.json`` (run id and ``--threads`` of each session), ``checkpoints/``,
``history.jsonl`` (the per-round log) and the outputs (``summary.json`` and plots). One
process at a time holds it, under a ``DirectoryLock`` for the whole run. Modes:

- ``new``: refuse a directory that already holds a run (``ConfigError``, exit 2);
- ``force``: delete the old run's files (only phalanx's own names), then start afresh;
- ``resume``: the directory must hold a run (``config.json``); nothing is written until
  the lifecycle found a checkpoint of this configuration to resume from.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from phalanx.checkpoint.layout import HISTORY_FILE
from phalanx.config import RunConfig
from phalanx.core.files import write_atomic
from phalanx.core.locks import DirectoryLock
from phalanx.errors import ConfigError, PhalanxError, StorageError

log = logging.getLogger("phalanx.coordinator.rundir")

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
OUTPUT_FILES = ("summary.json", "accuracy.png", "faults.png")
# What marks a directory as holding a run, in the order --force deletes it (config.json
# first: a --force killed half-way leaves a directory that --resume refuses, never a mix).
RUN_ENTRIES = (CONFIG_FILE, RUN_FILE, CHECKPOINTS, HISTORY_FILE, *OUTPUT_FILES)

Mode = Literal["new", "force", "resume"]


def storage_error(path: Path, action: str, exc: OSError) -> PhalanxError:
    """An OS error on a run directory as the error a user can act on."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return ConfigError(f"cannot {action} {path}: a path component is a file, not a directory")
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


def check_directory_argument(path: Path, flag: str) -> None:
    """``path`` can be a run directory: it is one, or nothing on its way is a file."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {path}: {parent} is a file, not a directory")
            break


def holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_ENTRIES)


def fresh_directory(base: Path) -> Path:
    """``base`` if it holds no run, else the first of ``base-2``, ``base-3``, ... that does
    not (so a repeated ``phalanx run`` never writes over a finished run)."""
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not holds_run(candidate):
            return candidate
    raise ConfigError(f"{base}-2 ... {base}-9999 all hold runs; give --out")


def read_saved_config(path: Path) -> dict[str, Any]:
    """The configuration a run directory was started with, for ``--resume``."""
    check_directory_argument(path, "--resume")
    if not path.is_dir():
        raise ConfigError(f"--resume {path}: no such directory")
    saved = path / CONFIG_FILE
    if not saved.exists():
        raise ConfigError(
            f"--resume {path}: no {CONFIG_FILE}, so it holds no run to resume "
            f"(start one with `phalanx run --out {path}`)"
        )
    try:
        data = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{saved}: cannot read ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{saved}: cannot read (not a JSON object)")
    return data


class RunDirectory:
    """One run's directory, locked while the run uses it (see the module docstring)."""

    def __init__(self, path: Path, *, mode: Mode, threads: int) -> None:
        self.path = Path(path)
        self.mode = mode
        self.threads = threads
        self.lock = DirectoryLock(self.path, purpose="run")
        # The run's id (stamped on every message, ``Envelope.run_id``): a new run's is fresh;
        # a resumed run keeps the one its run.json holds (known once ``acquire`` checked it).
        self.run_id = uuid.uuid4().hex

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    def acquire(self) -> None:
        """Take the lock, then apply the mode's check (and ``force``'s deletion)."""
        check_directory_argument(self.path, "--resume" if self.mode == "resume" else "--out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as exc:
            raise storage_error(self.path, "create the run directory", exc) from None
        try:
            self._check_mode()
        except BaseException:
            self.lock.release()
            raise

    def _check_mode(self) -> None:
        if self.mode == "new" and holds_run(self.path):
            raise ConfigError(
                f"--out {self.path} already holds a run: resume it with "
                f"`phalanx run --resume {self.path}`, choose another --out (or none, for a "
                "fresh directory), or add --force to delete it and start over"
            )
        if self.mode == "resume" and not (self.path / CONFIG_FILE).exists():
            raise ConfigError(f"--resume {self.path}: no {CONFIG_FILE}, so it holds no run")
        if self.mode == "force":
            self._clear()
        saved = self._saved_info().get("run_id") if self.mode == "resume" else None
        if isinstance(saved, str) and saved:
            self.run_id = saved

    def _clear(self) -> None:
        for name in RUN_ENTRIES:
            target = self.path / name
            try:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            except OSError as exc:
                raise storage_error(target, "delete", exc) from None
        log.info("--force: deleted the previous run in %s", self.path)

    def begin(self, config: RunConfig, *, resumed_at: int | None) -> None:
        """Record the run (after every check passed): config.json, and run.json with this
        session's threads; warns when a resume runs on other threads than the run began."""
        config_json = config.model_dump_json(indent=2).encode()
        info = self._run_info(resumed_at)
        try:
            config_path = self.path / CONFIG_FILE
            if not config_path.exists() or config_path.read_bytes() != config_json:
                write_atomic(config_path, config_json)
            write_atomic(self.path / RUN_FILE, json.dumps(info, indent=2).encode())
        except OSError as exc:
            raise storage_error(self.path, "write the run's files in", exc) from None

    def _run_info(self, resumed_at: int | None) -> dict[str, Any]:
        session = {"threads": self.threads, "pid": os.getpid(), "started": _now()}
        if resumed_at is None:
            return {"run_id": self.run_id, "threads": self.threads, "sessions": [session]}
        info = {"run_id": self.run_id, "threads": None, "sessions": [], **self._saved_info()}
        info["run_id"] = self.run_id  # the saved one (``acquire``), or a new one if it had none
        if info.get("threads") not in (None, self.threads):
            log.warning(
                "this run began with --threads %s and resumes with --threads %s: the "
                "model's last bits may differ from an uninterrupted run's",
                info["threads"], self.threads,
            )  # fmt: skip
        info.setdefault("sessions", []).append({**session, "resumed_at_round": resumed_at})
        return info

    def _saved_info(self) -> dict[str, Any]:
        """run.json as the run left it ({} when it is missing or unreadable)."""
        try:
            info = json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def release(self) -> None:
        self.lock.release()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
