"""``TermHistory``: the ``history.jsonl`` of a coordinator in an HA group.

A coordinator's own history holds the rounds *it* committed, term after term, with gaps
where others led; the group's history is the union (``commits.jsonl`` and the checker say
which coordinator committed what). So, unlike a single coordinator's log, nothing is cut
back to a checkpoint's round when a term starts: lines are appended. Only a torn last line
(a SIGKILL mid-append) is cut, so the next append starts on a line of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from phalanx.coordinator.history_log import HistoryLog
from phalanx.errors import StorageError


class TermHistory(HistoryLog):
    def start(self, next_round: int, last_record: Mapping[str, Any] | None) -> None:
        if self._fd is not None:
            return
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            keep = data.rfind(b"\n") + 1  # whole lines only
            os.ftruncate(self._fd, keep)
            os.lseek(self._fd, keep, os.SEEK_SET)
        except OSError as exc:
            self.close()
            raise StorageError(f"{self.path}: cannot open ({exc.strerror or exc})") from exc
