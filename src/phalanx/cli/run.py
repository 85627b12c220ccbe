"""``phalanx run``'s work: run a scenario in the embedded simulation, write its outputs.

``phalanx.cli.run_command`` parses the command line and imports this module only then.

The run directory is ``--out DIR`` (refused if it holds a run, unless ``--force``), a fresh
``runs/NAME``, ``runs/NAME-2``, ... when ``--out`` is not given, or ``--resume DIR``. The
first SIGINT/SIGTERM abandons the round in flight, writes the outputs of what committed and
exits 130/143; a second one exits at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console

from phalanx.checkpoint.format import parse_dir_name
from phalanx.cli import exiting
from phalanx.cli.progress import round_progress
from phalanx.cli.run_command import RunOptions
from phalanx.config import RunConfig, build_config, load_config
from phalanx.coordinator import RunDirectory, RunInterrupted, trajectory_changes
from phalanx.coordinator.rundir import (
    CONFIG_FILE,
    check_directory_argument,
    fresh_directory,
    read_saved_config,
)
from phalanx.core.state import ServerState
from phalanx.errors import ConfigError, NoProgressError
from phalanx.observability.plot_process import PlotProcess
from phalanx.observability.report import write_run_outputs
from phalanx.observability.summary import render_summary, summarize
from phalanx.scenarios import available, scenario_path
from phalanx.simulation import RunResult, Simulation

__all__ = [
    "CONFIG_FILE",
    "execute",
    "require_progress",
]  # CONFIG_FILE: `phalanx checkpoints` reads it too


def scenario_file(scenario: str | None) -> Path:
    """A shipped name wins over a directory of that name; a path wins only if it is a file."""
    if scenario is None:
        return scenario_path("seed")
    path = Path(scenario)
    if path.is_file():
        return path
    if scenario in available():
        return scenario_path(scenario)
    if path.is_dir():
        raise ConfigError(
            f"scenario {scenario!r} is a directory, not a TOML file; "
            f"shipped scenarios: {', '.join(available())}"
        )
    if scenario.endswith(".toml") or "/" in scenario:
        raise ConfigError(f"scenario file {scenario!r} does not exist")
    return scenario_path(scenario)  # an unknown name: the error lists the shipped ones


def resolve_config(scenario: str | None, overrides: list[str], resume: Path | None) -> RunConfig:
    """A resumed run uses the configuration saved in its directory, with overrides that
    leave its trajectory alone (more rounds, another checkpoint policy); otherwise the
    scenario (a TOML file or a shipped name; the seed scenario by default) with overrides."""
    if resume is None:
        return load_config(scenario_file(scenario), overrides)
    if scenario is not None:
        raise ConfigError("--resume uses the configuration saved in its directory; drop SCENARIO")
    saved = read_saved_config(resume)
    config = build_config(saved, overrides)
    changes = trajectory_changes(build_config(saved, []), config)
    if changes:
        raise ConfigError(
            f"--set would change the trajectory of the run in {resume}, which its checkpoints "
            f"cannot continue: {'; '.join(changes)}. Only rounds and checkpoint.* may change "
            "on resume; start a new run (--out) for the rest. Nothing was written."
        )
    return config


def run_directory(
    config: RunConfig, out: Path | None, resume: Path | None, *, force: bool, threads: int
) -> RunDirectory:
    if resume is not None:
        if out is not None or force:
            raise ConfigError("--resume continues a run in place: drop --out and --force")
        return RunDirectory(resume, mode="resume", threads=threads)
    if out is None:
        return RunDirectory(
            fresh_directory(Path("runs") / config.name), mode="new", threads=threads
        )
    check_directory_argument(out, "--out")
    return RunDirectory(out, mode="force" if force else "new", threads=threads)


def execute(options: RunOptions, drawer: PlotProcess | None, wall_start: float) -> None:
    """Do the run ``options`` ask for, its plots drawn by ``drawer`` (None: no plots)."""
    torch.set_num_threads(options.threads)
    out, resume, threads = options.out, options.resume, options.threads
    if out is not None:
        check_directory_argument(out, "--out")
    config = resolve_config(options.scenario, options.overrides, resume)
    simulation = Simulation(config)  # names (aggregator, attack) fail here, before any output
    directory = run_directory(config, out, resume, force=options.force, threads=threads)
    console = Console()
    if out is None and resume is None:
        console.print(f"run directory: {directory.path}", soft_wrap=True, highlight=False)
    code = 0
    with round_progress(
        console, name=config.name, rounds=config.rounds, enabled=not options.quiet
    ) as hook:
        try:
            result = simulation.run(run_dir=directory, resume=resume is not None, on_round=[hook])
        except RunInterrupted as stop:
            if not isinstance(stop.result, RunResult):
                raise typer.Exit(stop.exit_code) from None
            result, code = stop.result, stop.exit_code
    finish(console, directory.path, config, result, wall_start, drawer=drawer)
    # Every output is fsynced and the run directory released: the process may end without
    # the interpreter's teardown (the plot helper is reaped on the way out of ``run_command``).
    exiting.outputs_durable()
    if code:
        console.print(stopped(directory.path, result, code), soft_wrap=True, highlight=False)
        raise typer.Exit(code)
    require_progress(config, result.state, result.history, directory.path)


def require_progress(
    config: RunConfig, state: ServerState, history: list[dict[str, Any]], out_dir: Path
) -> None:
    """A run that committed no round fails (``NoProgressError``) saying why the last was
    discarded; ``phalanx serve`` shares it."""
    if state.model_version == 0 and config.rounds > 0:
        reasons = history[-1]["reasons"] if history else []
        raise NoProgressError(
            f"no round committed in {state.round} rounds; the last was discarded "
            f"because: {'; '.join(reasons) or 'unknown'} (outputs in {out_dir})"
        )


def finish(
    console: Console, out_dir: Path, config: RunConfig, result: RunResult, wall_start: float,
    *, drawer: PlotProcess | None,
) -> None:  # fmt: skip
    """Write summary.json and (with a ``drawer``) the plots; print the summary table."""
    summary = summarize(
        result.history,
        wall_time_s=time.perf_counter() - wall_start,
        train_time_s=result.train_time_s,
        extra={
            "scenario": config.name,
            "seed": config.seed,
            "updates_trained": result.training.trained,
            "trained_thrown_away": result.training.thrown_away,
        },
    )
    # The summary as written: its wall_time_s is the process's, up to the outputs written.
    summary = write_run_outputs(
        out_dir, result.history, summary, plots=drawer is not None, drawer=drawer
    )
    console.print(render_summary(summary))
    drawn = ", accuracy.png, faults.png" if drawer is not None else ""
    console.print(f"outputs in {out_dir}/ (summary.json, history.jsonl{drawn})")


def stopped(out_dir: Path, result: RunResult, code: int) -> str:
    """What a stopped run says: where it got to and how to go on."""
    root = out_dir / "checkpoints"
    saved = root.is_dir() and any(parse_dir_name(p.name) is not None for p in root.iterdir())
    how = (
        f"continue with: phalanx run --resume {out_dir}"
        if saved
        else f"no checkpoint yet; start again with: phalanx run --out {out_dir} --force"
    )
    return (
        f"stopped by signal {code - 128} after {result.state.round} finished rounds "
        f"(the round in flight was abandoned); {how}"
    )
