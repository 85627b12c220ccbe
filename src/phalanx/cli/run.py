"""``phalanx run``: run a scenario in the embedded simulation and write its outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from phalanx.cli.progress import round_progress
from phalanx.config import RunConfig, build_config, load_config
from phalanx.core.files import write_atomic
from phalanx.errors import ConfigError
from phalanx.observability.report import write_run_outputs
from phalanx.observability.summary import render_summary, summarize
from phalanx.scenarios import scenario_path
from phalanx.simulation import Simulation

CONFIG_FILE = "config.json"


def resolve_config(scenario: str | None, overrides: list[str], resume: Path | None) -> RunConfig:
    """A resumed run uses the configuration saved in its directory; otherwise the scenario
    (a TOML path or a shipped name; the seed scenario by default) with overrides."""
    if resume is not None and (resume / CONFIG_FILE).exists():
        if scenario is not None:
            raise ConfigError(
                "--resume uses the configuration saved in its directory; drop SCENARIO"
            )
        try:
            saved = json.loads((resume / CONFIG_FILE).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"{resume / CONFIG_FILE}: cannot read ({error})") from None
        return build_config(saved, overrides)
    if scenario is None:
        path = scenario_path("seed")
    elif scenario.endswith(".toml") or Path(scenario).exists():
        path = Path(scenario)
    else:
        path = scenario_path(scenario)
    return load_config(path, overrides)


def run(
    scenario: Annotated[
        str | None, typer.Argument(help="A scenario TOML file or a shipped name (seed, digits).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key, e.g. --set selection.clients_per_round=5"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/NAME).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this directory from its last checkpoint."),
    ] = None,
    threads: Annotated[int, typer.Option(help="torch intra-op threads for this process.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    plots: Annotated[bool, typer.Option(help="Draw accuracy.png and faults.png.")] = True,
) -> None:
    """Run a scenario (the seed scenario by default) and write summary, history and plots."""
    wall_start = time.perf_counter()
    torch.set_num_threads(threads)
    config = resolve_config(scenario, overrides or [], resume)
    simulation = Simulation(config)  # names (aggregator, attack) fail here, before any output
    out_dir = resume or out or Path("runs") / config.name
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / CONFIG_FILE, config.model_dump_json(indent=2).encode())
    console = Console()
    with round_progress(console, name=config.name, rounds=config.rounds, enabled=not quiet) as hook:
        result = simulation.run(
            checkpoint_dir=out_dir / "checkpoints", resume=resume is not None, on_round=[hook]
        )
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
    write_run_outputs(out_dir, result.history, summary, plots=plots)
    console.print(render_summary(summary))
    drawn = ", accuracy.png, faults.png" if plots else ""
    console.print(f"outputs in {out_dir}/ (summary.json, history.jsonl{drawn})")
