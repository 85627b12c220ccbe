"""A run's output folder: ``summary.json``, ``history.jsonl`` and the two plots.

``history.jsonl`` is the run lifecycle's per-round log, appended as rounds commit;
``write_run_outputs`` writes the rest at the end of a run, every file atomically and
``summary.json`` last, so its ``wall_time_s`` covers them. The plots are drawn here or by a
``PlotProcess`` started when the run began; if they cannot be drawn, ``summary.json`` is
still written and the ``StorageError`` saying why raised after it. ``redraw`` rebuilds the
plots (and, if ``summary.json`` is missing, the summary) from ``history.jsonl`` alone, so a
finished run can be re-plotted after the plotting code changes. A history whose last line
was torn by a crash or a full disk is read without that line (with one warning); damage
anywhere else is an error. OS and JSON errors are translated here into ``PhalanxError``
with a message naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phalanx.core.files import write_atomic
from phalanx.errors import PhalanxError, StorageError
from phalanx.observability.summary import History, summarize

if TYPE_CHECKING:
    from phalanx.observability.plot_process import PlotProcess

log = logging.getLogger("phalanx.observability")

SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.jsonl"
ACCURACY_PLOT = "accuracy.png"
FAULTS_PLOT = "faults.png"


_IMPORTED = time.perf_counter()


def process_wall_time_s() -> float:
    """Seconds since this process started (interpreter start and imports included), as the
    kernel recorded its start; where /proc is missing, since phalanx's outputs were imported."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, boot clock
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


def write_run_outputs(
    out_dir: Path,
    history: History,
    summary: Mapping[str, Any],
    *,
    plots: bool = True,
    drawer: PlotProcess | None = None,
) -> dict[str, Any]:
    """Draw (unless ``plots`` is False; in ``drawer`` if given, else here) both plots into
    ``out_dir``, then write ``summary.json``, whose ``wall_time_s`` becomes this process's
    wall time so far (start to outputs written). Returns the summary as written.

    ``history.jsonl`` is not written here: the run lifecycle appends it round by round.
    Plots that cannot be drawn raise ``StorageError``, after ``summary.json`` is written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        failure = _draw(out_dir, history, drawer) if plots else None
        written = {**summary, "wall_time_s": process_wall_time_s()}
        text = json.dumps(written, indent=2, sort_keys=True) + "\n"
        write_atomic(out_dir / SUMMARY_FILE, text.encode())
    except OSError as exc:
        raise StorageError(f"cannot write run outputs to {out_dir}: {exc}") from exc
    if failure is not None:
        raise StorageError(f"{failure} ({SUMMARY_FILE} was written in {out_dir})")
    return written


def redraw(out_dir: Path) -> dict[str, Any]:
    """Redraw both plots from ``out_dir/history.jsonl``; return the run's summary.

    The summary is read from ``summary.json`` if present, else recomputed from the history
    with wall and train time 0 (they are not recorded per round).
    """
    history = read_history(out_dir / HISTORY_FILE)
    summary_path = out_dir / SUMMARY_FILE
    if summary_path.exists():
        summary = _load_object(summary_path, _read(summary_path), line=None)
    else:
        summary = summarize(history, wall_time_s=0.0, train_time_s=0.0)
    try:
        draw_plots(out_dir, history)
    except OSError as exc:
        raise StorageError(f"cannot redraw plots in {out_dir}: {exc}") from exc
    return summary


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rounds of a ``history.jsonl`` file, one JSON object per non-blank line. A last
    line that does not parse was torn mid-append: it is skipped with a warning. A damaged
    line anywhere else is an error naming it."""
    numbered = [(n, line) for n, line in enumerate(_read(path).splitlines(), 1) if line.strip()]
    try:
        records = [_load_object(path, line, line=n) for n, line in numbered[:-1]]
    except PhalanxError as exc:
        raise PhalanxError(f"{exc}; the history is damaged before its last line") from None
    if numbered:
        number, last = numbered[-1]
        try:
            records.append(_load_object(path, last, line=number))
        except PhalanxError as exc:
            log.warning("%s; skipped: a torn last line (the run was cut off mid-write)", exc)
    return records


def _draw(out_dir: Path, history: History, drawer: PlotProcess | None) -> StorageError | None:
    """Draw both plots (in ``drawer`` if given); the error that kept them from disk, if any."""
    try:
        if drawer is not None:
            drawer.draw(out_dir, history)
        else:
            draw_plots(out_dir, history)
    except StorageError as exc:
        return exc
    except OSError as exc:
        return StorageError(f"plots not drawn in {out_dir}: {exc}")
    return None


def draw_plots(out_dir: Path, history: History) -> list[str]:
    """Draw both plots into ``out_dir`` in this process; returns their file names."""
    # matplotlib costs ~0.4 s to import: only processes that draw pay for it.
    from phalanx.observability.plots import plot_accuracy, plot_faults

    plot_accuracy(history, out_dir / ACCURACY_PLOT)
    plot_faults(history, out_dir / FAULTS_PLOT)
    return [ACCURACY_PLOT, FAULTS_PLOT]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PhalanxError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PhalanxError(f"{path}: cannot read: {exc}") from exc


def _load_object(path: Path, text: str, *, line: int | None) -> dict[str, Any]:
    where = f"{path}:{line}" if line is not None else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PhalanxError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PhalanxError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value
