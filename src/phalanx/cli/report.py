"""``phalanx report DIR``: redraw a finished run's plots and print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from phalanx.observability.report import redraw
from phalanx.observability.summary import render_summary


def report(
    out_dir: Annotated[Path, typer.Argument(help="A run's output directory.")],
) -> None:
    """Redraw accuracy.png and faults.png from history.jsonl and print the summary."""
    summary = redraw(out_dir)
    console = Console()
    console.print(render_summary(summary))
    console.print(f"plots redrawn in {out_dir}")
