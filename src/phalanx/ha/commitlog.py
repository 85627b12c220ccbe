"""``commits.jsonl``: what this coordinator saw committed, for the history checker.

One fsynced JSON line per event, appended:

- ``takeover``: this coordinator began to lead at ``epoch``, from the pointer it read
  (``round``, ``model_digest``, ``pointer_epoch``; round 0 and the initial model's digest
  when nothing was committed yet);
- ``commit``: its fenced transaction for ``round`` succeeded (``model_digest``, and
  ``base_digest``: the model the round started from);
- ``refused``: its transaction was refused by fencing (nothing committed);
- ``uncertain``: etcd did not answer the transaction; whether it applied is for the
  successor's ``takeover`` line to tell.

The log is evidence, not state: nothing reads it back to run. ``ha.checker`` reads every
coordinator's log and proves the commits form one chain.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from phalanx.core.files import fsync_dir
from phalanx.errors import StorageError

FILE = "commits.jsonl"


class CommitLog:
    def __init__(self, path: Path, *, coordinator: str) -> None:
        self.path = path
        self.coordinator = coordinator

    def write(self, kind: str, **fields: Any) -> None:
        line = {"kind": kind, "coordinator": self.coordinator, "time": time.time(), **fields}
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot append ({exc.strerror or exc})") from exc


def read_log(path: Path) -> list[dict[str, Any]]:
    """The whole lines of ``path`` (a torn last line from a SIGKILL is dropped)."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    entries = []
    for line in lines:
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            if line is not lines[-1]:
                raise
    return entries
