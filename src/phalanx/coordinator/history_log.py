"""The per-round log: one JSON line per finished round, appended, fsynced before checkpoints.

History is not part of the server state (it would make every checkpoint grow with the run).
``HistoryLog`` keeps it in ``history.jsonl`` beside the checkpoints: each round's record is
appended after the round's checkpoint (if any) is durable. The log is fsynced just before
each checkpoint is written and when it closes, not at every round: a resume cuts the log
back to the checkpoint's round anyway, so only the lines up to a checkpoint must survive a
power loss, and those are synced before that checkpoint exists (the checkpoint's own round
comes back from the checkpoint). That saves an fsync per round. On resume the log is
cut back to the checkpoint's round: lines of rounds the checkpoint does not hold are dropped
(they will be run again), a torn last line (a crash mid-append) is dropped with a warning,
and the checkpoint's own last record is put back if the crash came between the checkpoint
and the append. ``MemoryHistory`` is the same interface for a run without a directory.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from phalanx.core.files import fsync_dir
from phalanx.errors import StorageError

log = logging.getLogger("phalanx.coordinator.history")

Record = dict[str, Any]


class History(Protocol):
    """Where committed rounds' records go, in round order."""

    def start(self, next_round: int, last_record: Mapping[str, Any] | None) -> None:
        """Keep the records of rounds before ``next_round`` only (restoring ``last_record``,
        the checkpoint's own last round, if it is missing); then accept appends."""
        ...

    def append(self, record: Mapping[str, Any]) -> None: ...

    def sync(self) -> None:
        """Make every record appended so far durable."""
        ...

    def records(self) -> list[Record]: ...

    def close(self) -> None: ...


class MemoryHistory:
    """History of a run without a directory: kept in memory, lost with the process."""

    def __init__(self) -> None:
        self._records: list[Record] = []

    def start(self, next_round: int, last_record: Mapping[str, Any] | None) -> None:
        self._records = [r for r in self._records if int(r["round"]) < next_round]

    def append(self, record: Mapping[str, Any]) -> None:
        self._records.append(dict(record))

    def sync(self) -> None:
        return None

    def records(self) -> list[Record]:
        return list(self._records)

    def close(self) -> None:
        return None


class HistoryLog:
    """``history.jsonl`` as an append-only, fsynced log (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def start(self, next_round: int, last_record: Mapping[str, Any] | None) -> None:
        try:
            lines = self.path.read_bytes().split(b"\n") if self.path.exists() else [b""]
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc
        keep, rounds = _prefix(self.path, lines, next_round)
        missing = last_record is not None and int(last_record["round"]) == next_round - 1
        restore = missing and (not rounds or rounds[-1] != next_round - 1)
        if len(rounds) + restore != next_round:
            log.warning(
                "%s holds %s of the %s rounds before the checkpoint; the rest are lost",
                self.path, len(rounds) + restore, next_round,
            )  # fmt: skip
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.ftruncate(self._fd, keep)
            os.lseek(self._fd, keep, os.SEEK_SET)
            os.fsync(self._fd)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.close()
            raise StorageError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        if restore and last_record is not None:
            self.append(last_record)
            self.sync()

    def append(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise StorageError(f"{self.path}: history log is not open")
        line = (json.dumps(dict(record)) + "\n").encode()
        try:
            written = os.write(self._fd, line)
            while written < len(line):  # a short write on a full disk: retry, or raise
                written += os.write(self._fd, line[written:])
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot append ({exc.strerror or exc})") from exc

    def sync(self) -> None:
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot sync ({exc.strerror or exc})") from exc

    def records(self) -> list[Record]:
        """Every record in the log (read back from disk: a long run's history need not fit
        in the coordinator's memory while it runs)."""
        lines = self.path.read_bytes().split(b"\n") if self.path.exists() else [b""]
        return [json.loads(line) for line in lines if line.strip()]

    def close(self) -> None:
        """Sync what was appended and close (a failed sync still closes, then raises)."""
        fd = self._fd
        if fd is None:
            return
        try:
            self.sync()
        finally:
            self._fd = None
            os.close(fd)


def _prefix(path: Path, lines: list[bytes], next_round: int) -> tuple[int, list[int]]:
    """Byte length of the lines to keep and their rounds: whole, parseable lines of rounds
    before ``next_round``. Only the last line may be torn; damage before it is an error."""
    keep, rounds = 0, []
    body = lines[:-1]  # lines[-1] is what follows the last newline: a torn append, if any
    last = max((i for i, line in enumerate(body) if line.strip()), default=-1)
    for number, line in enumerate(body, start=1):
        if not line.strip():
            keep += len(line) + 1
            continue
        try:
            round_ = int(json.loads(line)["round"])
        except (ValueError, KeyError, TypeError) as exc:
            if number - 1 == last and not lines[-1].strip():
                log.warning("%s:%s: dropping a torn last line", path, number)
                break
            raise StorageError(f"{path}:{number}: damaged history line ({exc})") from exc
        if round_ >= next_round:
            break
        keep += len(line) + 1
        rounds.append(round_)
    if lines[-1].strip():
        log.warning("%s: dropping a torn last line (a crash mid-append)", path)
    return keep, rounds
