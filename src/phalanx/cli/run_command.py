"""``phalanx run``: the command line, parsed before anything heavy is imported.

The run's work (``phalanx.cli.run``) needs torch and the engine, about 1 s of imports. The
plot helper (a fresh interpreter importing matplotlib, ``PlotProcess``) starts first, so its
import and warm-up overlap the run's own imports on another core, and it is ready however
fast the training ends. The heavy modules are imported next, under ``frozen_imports``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from phalanx.cli.startup import frozen_imports
from phalanx.errors import ConfigError
from phalanx.observability.plot_process import PlotProcess


@dataclass(frozen=True)
class RunOptions:
    """What ``phalanx run`` was asked to do, as parsed."""

    scenario: str | None
    overrides: list[str]
    out: Path | None
    force: bool
    resume: Path | None
    threads: int
    quiet: bool
    plots: bool


def run(
    scenario: Annotated[
        str | None, typer.Argument(help="A scenario TOML file or a shipped name (seed, digits).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key, e.g. --set selection.clients_per_round=5"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run directory (default: a fresh runs/NAME, runs/NAME-2, ...)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="With --out: delete the run that directory holds, start over.")
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this directory from its last checkpoint."),
    ] = None,
    threads: Annotated[int, typer.Option(help="torch intra-op threads for this process.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    plots: Annotated[bool, typer.Option(help="Draw accuracy.png and faults.png.")] = True,
) -> None:
    """Run a scenario (the seed scenario by default) and write summary, history and plots."""
    options = RunOptions(scenario, overrides or [], out, force, resume, threads, quiet, plots)
    try:
        _run(options, time.perf_counter())
    except KeyboardInterrupt:  # a signal before the run started, or a second one
        raise typer.Exit(130) from None


def _run(options: RunOptions, wall_start: float) -> None:
    if options.threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {options.threads}")
    # The plots are drawn by a helper process; it is killed and reaped on every way out.
    drawer = PlotProcess() if options.plots else None
    try:
        with frozen_imports():
            from phalanx.cli import run as work
        work.execute(options, drawer, wall_start)
    finally:
        if drawer is not None:
            drawer.close()
