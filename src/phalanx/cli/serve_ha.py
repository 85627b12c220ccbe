"""``phalanx serve --ha etcd://...``: one coordinator of a failover group.

Several coordinators started with the same scenario, overrides, ``--ha`` URL and shared
``checkpoint.stores`` form a group: one leads (it holds the etcd lease), the others stand
by and answer clients with the leader's ``--advertise`` address. Each exits 0 once the
group's run is finished, whoever committed its last round. See docs/failover.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from phalanx.cli.run import run_directory
from phalanx.cli.serve import coordinator_config
from phalanx.config import RunConfig
from phalanx.coordinator import HistoryLog, RunDirectory, StopSignals
from phalanx.coordinator.rundir import holds_run
from phalanx.errors import ConfigError
from phalanx.ha.deployment import HaDeployment, HaResult
from phalanx.ha.election import HaSettings
from phalanx.ha.etcd import Target
from phalanx.observability.report import write_run_outputs
from phalanx.observability.summary import summarize
from phalanx.runtime.grpc.coordinator.deployment import Endpoint, Guard, ServedModel
from phalanx.runtime.grpc.coordinator.settings import ServeSettings


def ha_settings(url: str, advertise: str | None, listen: str, ttl_s: int) -> HaSettings:
    """``--ha``, ``--advertise`` (default: the listen address, which must then name a
    reachable host and a fixed port) and ``--ha-ttl``, checked."""
    address = advertise or listen
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0 or host in ("", "0.0.0.0", "[::]"):
        raise ConfigError(
            f"--advertise wants the HOST:PORT clients reach this coordinator at; got "
            f"{address!r} (give --advertise when --listen uses port 0 or a wildcard host)"
        )
    return HaSettings(Target.parse(url), address, ttl_s=ttl_s)


def serve_ha(
    scenario: str | None, overrides: list[str], out: Path | None, force: bool, threads: int,
    endpoint: Endpoint, settings: ServeSettings, guard: Guard, ha: HaSettings,
    served_model: Callable[[RunConfig], ServedModel],
) -> None:  # fmt: skip
    wall_start = time.perf_counter()
    config = coordinator_config(scenario, overrides, None, threads)
    logging.getLogger("phalanx.ha").setLevel(logging.INFO)
    deployment = HaDeployment(config, served_model(config), settings=settings, guard=guard, ha=ha)
    if out is not None and holds_run(out) and not force:
        # a member restarted on its own directory: its history and commit log go on
        directory = RunDirectory(out, mode="resume", threads=threads)
    else:
        directory = run_directory(config, out, None, force=force, threads=threads)
    console = Console()
    console.print(f"run directory: {directory.path}", soft_wrap=True, highlight=False)

    def listening(port: int) -> None:
        console.print(
            f"listening on {endpoint.address.rpartition(':')[0]}:{port}; advertised as "
            f"{ha.advertise}; group {ha.target.prefix} in etcd {','.join(ha.target.endpoints)}",
            soft_wrap=True, highlight=False,
        )  # fmt: skip
        console.file.flush()  # a launcher or test reading a redirected stdout sees it now

    with StopSignals() as signals:

        async def main() -> HaResult:
            task = asyncio.current_task()
            if task is not None:
                signals.attach(task)
            return await deployment.run(directory, endpoint, on_listening=listening)

        try:
            result = asyncio.run(main())
        except (KeyboardInterrupt, asyncio.CancelledError):
            if signals.signum is None:
                raise
            raise typer.Exit(128 + signals.signum) from None
    _outputs(console, directory.path, config.name, result, wall_start)


def _outputs(
    console: Console, out_dir: Path, name: str, result: HaResult, wall_start: float
) -> None:
    pointer = result.pointer
    where = (
        f"round {pointer.round} committed at epoch {pointer.epoch}"
        if pointer is not None
        else "nothing committed"
    )
    console.print(
        f"the group's run is finished: {where}; this coordinator led {result.terms} term(s)",
        soft_wrap=True, highlight=False,
    )  # fmt: skip
    history = HistoryLog(out_dir / "history.jsonl").records()
    if history:
        summary = summarize(
            history, wall_time_s=time.perf_counter() - wall_start, train_time_s=0.0,
            extra={"scenario": name, "runtime": "grpc-ha", "terms_led": result.terms},
        )  # fmt: skip
        write_run_outputs(out_dir, history, summary, plots=False)
