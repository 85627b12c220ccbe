"""Drawing a run's plots in a helper process, off the run's critical path.

Importing matplotlib takes about 0.4 s, as long as half the default run's training. A
thread cannot hide it: the import is Python bytecode and fights the training for the GIL
(measured: training 0.74 s -> 1.41 s). ``PlotProcess`` starts a helper process
(``plot_worker``); ``phalanx run`` starts it before importing torch, so it imports
matplotlib on another core while the run imports and trains, and draws when handed the
finished history. The run still waits for the PNGs, so
they are on disk when ``phalanx run`` returns.

The helper is a fresh interpreter (``subprocess``, never a fork of a process holding torch
threads) that never imports torch, with one thread for every native library. Every wait is
bounded: the drawing by ``timeout_s``, reaping a killed helper by ``_REAP_S``. A helper
that fails, dies or does not answer in time becomes a ``StorageError`` naming what
happened; ``close`` kills and reaps it whatever the run's fate, and the kernel kills it if
the run itself dies (``core.processes.die_with_parent``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import phalanx
from phalanx.core.processes import ONE_THREAD_ENV
from phalanx.errors import StorageError
from phalanx.observability.summary import History

log = logging.getLogger("phalanx.observability")

DRAW_TIMEOUT_S = 120.0  # a 1,000-round run draws in well under a second on an idle core
_REAP_S = 5.0


def _environment() -> dict[str, str]:
    """The parent's environment, with phalanx importable from where the parent has it,
    one thread for every native library, and matplotlib's non-interactive backend."""
    source = str(Path(phalanx.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **ONE_THREAD_ENV, "MPLBACKEND": "agg", "PYTHONPATH": path}


class PlotProcess:
    """One helper process that draws one run's plots. Use it as a context manager (or call
    ``close``) so that it is reaped on every path; ``draw`` at most once."""

    def __init__(self, command: list[str] | None = None) -> None:
        """Start the helper now. ``command`` replaces the helper's (tests start failing or
        silent helpers with it); the parent's pid is appended either way."""
        argv = command or [sys.executable, "-m", "phalanx.observability.plot_worker"]
        self._start_error: OSError | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                [*argv, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_environment(),
            )
        except OSError as exc:  # reported when the plots are asked for, not before
            self._start_error = exc

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def draw(self, out_dir: Path, history: History, *, timeout_s: float = DRAW_TIMEOUT_S) -> None:
        """Hand ``history`` over and wait (at most ``timeout_s``) until both PNGs are in
        ``out_dir``. Raises ``StorageError`` saying why if they are not."""
        if self._proc is None:
            raise StorageError(
                f"plots not drawn: cannot start the plot process: {self._start_error}"
            )
        request = json.dumps({"out_dir": str(out_dir.resolve()), "history": list(history)})
        try:  # one line: JSON without indent has no newline inside
            out, err = self._proc.communicate(request.encode() + b"\n", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.close()
            raise StorageError(
                f"plots not drawn: the plot process (pid {self._proc.pid}) did not answer "
                f"within {timeout_s:g} s and was killed"
            ) from None
        reply = _last_json(out)
        if self._proc.returncode == 0 and isinstance(reply.get("drawn"), list):
            return
        raise StorageError(f"plots not drawn: {_failure(self._proc.returncode, reply, err)}")

    def close(self) -> None:
        """Kill the helper if it still runs and reap it (bounded). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=_REAP_S)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed child not reaped
            log.warning("plot process %d not reaped %g s after SIGKILL", proc.pid, _REAP_S)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def __enter__(self) -> PlotProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _last_json(out: bytes) -> dict[str, Any]:
    for line in reversed(out.decode(errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _failure(code: int, reply: dict[str, Any], err: bytes) -> str:
    """Why the helper did not draw: its own answer, else how it ended and its last words."""
    if isinstance(reply.get("error"), str):
        return str(reply["error"])
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with status {code} without an answer"
    lines = err.decode(errors="replace").strip().splitlines()
    return f"the plot process {how}" + (f": {lines[-1]}" if lines else "")
