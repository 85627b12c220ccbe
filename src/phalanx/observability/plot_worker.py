"""The plot helper process: ``python -m phalanx.observability.plot_worker PARENT_PID``.

``PlotProcess`` starts it when a run that will draw begins. It imports matplotlib (most of
what drawing costs) on another core while the run trains, then waits for one request on
stdin: a JSON object ``{"out_dir": str, "history": [round, ...]}`` on one line (a line,
not end of input: a process forked from the run may hold the pipe open). It draws both
plots into ``out_dir`` at once, faults.png in a forked child (no second import: the run
waits for the slower plot, not for both), answers one JSON line on stdout, ``{"drawn":
[file, ...]}`` or ``{"error": "..."}`` with exit status 1, and exits. End of input
without a request (the run ended without drawing) exits 0 at once.

It never imports torch, so it holds no torch threads and its own thread count is set
through the environment its parent gives it (one thread for every native library). It dies
with its parent however that ends, SIGKILL included (Linux ``PR_SET_PDEATHSIG``), and
ignores SIGINT: Ctrl-C at a terminal reaches the whole process group, and the first one is
the run's to handle (it still writes the outputs, plots included). The request is JSON:
nothing that crossed the process boundary is unpickled.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from phalanx.core.processes import die_with_parent
from phalanx.observability.report import ACCURACY_PLOT, FAULTS_PLOT


def read_request(stream: Any) -> tuple[Path, list[dict[str, Any]]] | None:
    """(out_dir, history) from the one-line JSON request on ``stream``; None at end of input."""
    text = stream.readline()
    if not text.strip():
        return None
    request = json.loads(text)
    history = request["history"]
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ValueError("the request's history is not a list of rounds")
    return Path(request["out_dir"]), history


class ChildDrawingError(Exception):
    """The forked child did not draw its plot; the message says which and why."""


def draw_in_parallel(plots: ModuleType, out_dir: Path, history: list[dict[str, Any]]) -> list[str]:
    """accuracy.png here and faults.png in a forked child, at the same time. Forking is safe:
    this process runs no threads (one-thread native libraries, no torch)."""
    read_end, write_end = os.pipe()
    me = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child, which leaves by os._exit
        os.close(read_end)
        os._exit(_draw_child(plots, out_dir, history, write_end, me))
    os.close(write_end)
    try:
        plots.plot_accuracy(history, out_dir / ACCURACY_PLOT)
    finally:
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        _, status = os.waitpid(child, 0)
    if status != 0:
        raise ChildDrawingError(
            f"{FAULTS_PLOT}: {message or f'its process ended with status {status}'}"
        )
    return [ACCURACY_PLOT, FAULTS_PLOT]


def _draw_child(
    plots: ModuleType, out_dir: Path, history: list[dict[str, Any]], pipe: int, parent: int
) -> int:
    """The forked child's life: draw faults.png, or write why not to ``pipe``; exit status."""
    try:
        die_with_parent(parent)
        plots.plot_faults(history, out_dir / FAULTS_PLOT)
    except BaseException as exc:  # the child must reach os._exit, whatever happened
        os.write(pipe, f"{type(exc).__name__}: {exc}".encode()[:4096])
        return 1
    return 0


def serve(parent: int) -> int:
    """The helper's life: import, wait for the request, draw, answer. Returns the exit status."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from phalanx.observability import plots  # matplotlib: the slow part

    try:
        plots.warm_up()  # while the run trains: its own plots then draw warm
        request = read_request(sys.stdin.buffer)
        if request is None:
            return 0
        drawn = draw_in_parallel(plots, *request)
    except Exception as exc:  # every failure becomes the one-line answer the run reports
        why = str(exc) if isinstance(exc, ChildDrawingError) else f"{type(exc).__name__}: {exc}"
        print(json.dumps({"error": why}), flush=True)
        return 1
    print(json.dumps({"drawn": drawn}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m phalanx.observability.plot_worker PARENT_PID", file=sys.stderr)
        return 2
    return serve(int(argv[0]))


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The run waits for this process to end: skip the interpreter's teardown of matplotlib's
    # modules (about 0.15 s), which has nothing left to write (the PNGs are written and
    # fsynced, the answer flushed).
    os._exit(status)
