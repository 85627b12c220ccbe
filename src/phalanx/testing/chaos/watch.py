"""Timestamps for what a coordinator writes: each new line of its log, and the first sight of
each round in its history, as a thread polling both files every few milliseconds sees them.

The coordinator's log has no clock in it (``phalanx serve`` logs ``LEVEL name: message``),
and a timer in the supervisor's loop ticks every 0.1 s; a restart measured in tenths of a
second needs better. Log lines are kept with their byte offset: the log is only ever
appended to (every incarnation opens it with ``O_APPEND``), so "written by the incarnation
started after offset N" is "offset >= N". The history may be rewritten on resume (cut back
to the checkpoint's round), so rounds are timed by their first appearance, not by offset.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLL_S = 0.005


@dataclass(frozen=True)
class Line:
    at: float  # time.monotonic() when the watcher first read it
    offset: int  # where it starts in the file
    text: str


@dataclass
class FileWatch:
    """The lines of one append-only file, read as they appear."""

    path: Path
    lines: list[Line] = field(default_factory=list)
    _offset: int = 0
    _partial: bytes = b""

    def size(self) -> int:
        """How far the file has been read (every complete line before this is in ``lines``)."""
        return self._offset - len(self._partial)

    def poll(self, now: float) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return
        if not data:
            return
        start = self._offset - len(self._partial)
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            self.lines.append(Line(now, start, raw.decode("utf-8", "replace")))
            start += len(raw) + 1


class RunWatch:
    """Watches a coordinator's log and its run directory's ``history.jsonl`` on a thread."""

    def __init__(self, log: Path, history: Path) -> None:
        self.log = FileWatch(log)
        self.history = history
        self.rounds: dict[int, tuple[float, bool]] = {}  # round -> (first seen, committed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-watch", daemon=True)

    def __enter__(self) -> RunWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.poll()

    def poll(self) -> None:
        """Read what is new now (also called by the watcher's own thread)."""
        now = time.monotonic()
        with self._lock:
            self.log.poll(now)
            self._poll_history(now)

    def log_size(self) -> int:
        with self._lock:
            return self.log.size()

    def log_after(self, offset: int) -> list[Line]:
        with self._lock:
            return [line for line in self.log.lines if line.offset >= offset]

    def recorded(self) -> dict[int, tuple[float, bool]]:
        with self._lock:
            return dict(self.rounds)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def _poll_history(self, now: float) -> None:
        try:
            text = self.history.read_text(errors="replace")
        except OSError:
            return
        for raw in text.splitlines():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a torn last line: not a record yet
            round_ = int(record["round"])
            if round_ not in self.rounds:
                self.rounds[round_] = (now, bool(record["committed"]))
