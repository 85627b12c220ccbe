"""``phalanx launch``: a scenario as a local deployment, one coordinator and N client
processes over gRPC on loopback (``phalanx run --runtime grpc`` is the same).

The coordinator is ``phalanx serve`` (same engine, lifecycle, progress, summary and plots as
``phalanx run``); each client is ``phalanx client`` playing the scenario's fault plan for
real. See ``runtime/grpc/launcher.py`` for what the supervisor does.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from phalanx.cli.run import resolve_config
from phalanx.coordinator.rundir import CONFIG_FILE
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.launcher import LaunchPlan, LocalLauncher


def launch_plan(
    scenario: str | None, overrides: list[str], *, resume: Path | None, clients: int | None,
    serve_args: list[str], tls: bool, inject_faults: bool,
) -> LaunchPlan:  # fmt: skip
    """The processes a launch starts; the scenario is checked here, before any starts."""
    config = resolve_config(scenario, overrides, resume)
    population = clients if clients is not None else config.workload.num_clients
    if population < 1:
        raise ConfigError(f"--clients must be at least 1; got {population}")
    if resume is not None:  # the clients train the saved configuration, overrides applied
        client_scenario: str | None = str(resume / CONFIG_FILE)
        serve_args = ["--resume", str(resume), *serve_args]
    else:
        client_scenario = scenario
    return LaunchPlan(
        scenario=scenario, clients=tuple(range(population)), overrides=tuple(overrides),
        serve_args=tuple(serve_args), tls=tls, inject_faults=inject_faults,
        client_scenario=client_scenario,
    )  # fmt: skip


def launch(
    scenario: Annotated[
        str | None, typer.Argument(help="A scenario TOML file or a shipped name (seed, digits).")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key (coordinator and clients).")
    ] = None,
    clients: Annotated[
        int | None, typer.Option(help="Client processes (default: the workload's population).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/NAME...).")] = None,
    force: Annotated[bool, typer.Option(help="With --out: replace the run it holds.")] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    tls: Annotated[
        bool, typer.Option(help="Mutual TLS with a throwaway local CA (plaintext otherwise).")
    ] = False,
    faults: Annotated[
        bool, typer.Option(help="Client processes play the scenario's fault plan for real.")
    ] = True,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    plots: Annotated[bool, typer.Option(help="Draw accuracy.png and faults.png.")] = True,
) -> None:
    """Run a scenario as a coordinator and client processes over gRPC on this machine."""
    serve_args: list[str] = []
    if out is not None:
        serve_args += ["--out", str(out)]
    if force:
        serve_args.append("--force")
    serve_args += ["--quiet"] if quiet else []
    serve_args += [] if plots else ["--no-plots"]
    plan = launch_plan(
        scenario, overrides or [], resume=resume, clients=clients, serve_args=serve_args,
        tls=tls, inject_faults=faults,
    )  # fmt: skip
    logging.getLogger("phalanx.runtime.grpc.launcher").setLevel(logging.INFO)
    launcher = LocalLauncher(plan)

    def forward(signum: int, frame: FrameType | None) -> None:
        launcher.stop(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = launcher.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if result.restarts:
        typer.echo(
            f"client restarts: {sum(result.restarts.values())} ({len(result.restarts)} clients)"
        )
    if result.exit_code:
        raise typer.Exit(result.exit_code)
