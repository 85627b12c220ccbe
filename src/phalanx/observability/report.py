"""A run's output folder: ``summary.json``, ``history.jsonl`` and the two plots.

``write_run_outputs`` writes the folder at the end of a run; ``redraw`` rebuilds the plots
(and, if ``summary.json`` is missing, the summary) from ``history.jsonl`` alone, so a
finished run can be re-plotted after the plotting code changes. OS and JSON errors are
translated here into ``PhalanxError`` with a message naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phalanx.errors import PhalanxError
from phalanx.observability.summary import History, summarize

SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.jsonl"
ACCURACY_PLOT = "accuracy.png"
FAULTS_PLOT = "faults.png"


def write_run_outputs(
    out_dir: Path, history: History, summary: Mapping[str, Any], *, plots: bool = True
) -> None:
    """Write the summary and (unless ``plots`` is False) both plots into ``out_dir``.

    ``history.jsonl`` is not written here: the run lifecycle appends it round by round."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dict(summary), indent=2, sort_keys=True) + "\n"
        (out_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")
        if plots:
            _plot(out_dir, history)
    except OSError as exc:
        raise PhalanxError(f"cannot write run outputs to {out_dir}: {exc}") from exc


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
        _plot(out_dir, history)
    except OSError as exc:
        raise PhalanxError(f"cannot redraw plots in {out_dir}: {exc}") from exc
    return summary


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rounds of a ``history.jsonl`` file, one JSON object per non-blank line."""
    text = _read(path)
    return [
        _load_object(path, line, line=number)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _plot(out_dir: Path, history: History) -> None:
    # matplotlib costs ~0.35 s to import: only runs that draw pay for it.
    from phalanx.observability.plots import plot_accuracy, plot_faults

    plot_accuracy(history, out_dir / ACCURACY_PLOT)
    plot_faults(history, out_dir / FAULTS_PLOT)


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
