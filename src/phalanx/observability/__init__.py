"""What a run leaves behind: its summary, a terminal table, plots and the output folder.

The plotting functions live in ``phalanx.observability.plots``; they are not re-exported here
so that importing phalanx does not import matplotlib.
"""

from __future__ import annotations

from phalanx.observability.report import read_history, redraw, write_run_outputs
from phalanx.observability.summary import History, render_summary, summarize

__all__ = [
    "History",
    "read_history",
    "redraw",
    "render_summary",
    "summarize",
    "write_run_outputs",
]
