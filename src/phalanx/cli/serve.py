"""``phalanx serve``: run a scenario's engine as a gRPC coordinator for client processes.

The same engine and run lifecycle as ``phalanx run`` (checkpoints, ``--resume``, ``--out``,
the run-directory lock, SIGINT/SIGTERM, summary, history and plots), over the gRPC runtime
on the wall clock. Clients join, pull tasks and push updates (``phalanx client``); each round
waits, bounded by ``selection.member_wait_s`` and saying so, for the members its quorum
needs. ``--listen HOST:0`` takes any free port: the bound one is printed and, with
``--port-file``, written to a file.

Who may join: ``--credentials BOOK`` (hashed credentials per client id, ``phalanx
credentials issue``), or ``--allow-any-client`` (every id, any credential: a trusted
loopback only). TLS with ``--tls-cert``/``--tls-key`` (mutual with ``--tls-client-ca``);
per-client rate limits, an operator token for ``phalanx status``, Prometheus metrics
(``--metrics-port``) and the standard gRPC health service.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Annotated

import grpc
import torch
import typer
from rich.console import Console

from phalanx.cli.progress import round_progress
from phalanx.cli.run import require_progress, resolve_config, run_directory
from phalanx.config import RunConfig
from phalanx.coordinator import RunInterrupted, StopSignals
from phalanx.errors import ConfigError
from phalanx.evaluation import classification_evaluator
from phalanx.observability.report import write_run_outputs
from phalanx.observability.summary import render_summary, summarize
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.coordinator import AnyCredential, Authenticator, ServeSettings
from phalanx.runtime.grpc.coordinator.access import OperatorToken
from phalanx.runtime.grpc.coordinator.deployment import (
    Deployment,
    Endpoint,
    Guard,
    ServedModel,
    ServeResult,
)
from phalanx.runtime.grpc.coordinator.server import check_address
from phalanx.runtime.grpc.credentials import CredentialBook, read_token
from phalanx.runtime.grpc.limits import ClientLimiter
from phalanx.runtime.grpc.tls import server_credentials
from phalanx.simulation import initial_model, model_manifest
from phalanx.workloads import build_workload

__all__ = ["serve", "served_model"]


def served_model(config: RunConfig) -> ServedModel:
    """The scenario's built-in workload model (initial weights from the seed) and, when the
    workload has a test set, its accuracy evaluator."""
    workload = build_workload(config.workload, config.seed)
    model = initial_model(workload.make_model, config.seed)
    params, manifest = model_manifest(model)
    evaluate = classification_evaluator(model, manifest, workload.test) if workload.test else None
    return ServedModel(params, manifest, evaluate)


def serve(
    scenario: Annotated[
        str | None, typer.Argument(help="A scenario TOML file or a shipped name (seed, digits).")
    ] = None,
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to serve on; port 0 picks a free one.")
    ] = "127.0.0.1:50051",
    port_file: Annotated[
        Path | None, typer.Option(help="Write the bound port here (for launchers and tests).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key, e.g. --set selection.member_wait_s=30"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/NAME...).")] = None,
    force: Annotated[bool, typer.Option(help="With --out: replace the run it holds.")] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(help="The clients' credential book (phalanx credentials issue)."),
    ] = None,
    allow_any_client: Annotated[
        bool, typer.Option(help="No credential book: any id, any credential (trusted loopback).")
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="Server certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Server private key (PEM).")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="CA of client certificates: mutual TLS.")
    ] = None,
    operator_token_file: Annotated[
        Path | None, typer.Option(help="Token phalanx status must present (default: none).")
    ] = None,
    calls_per_s: Annotated[float, typer.Option(help="Per-client call rate limit (0: none).")] = 0.0,
    bytes_per_s: Annotated[float, typer.Option(help="Per-client byte rate limit (0: none).")] = 0.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (0: any free).")
    ] = None,
    heartbeat_s: Annotated[float, typer.Option(help="Heartbeat interval told to clients.")] = 1.0,
    patience_s: Annotated[
        float, typer.Option(help="Silence after which a client's task fails at once.")
    ] = 3.0,
    pull_wait_s: Annotated[float, typer.Option(help="Longest wait of a task long-poll.")] = 5.0,
    max_uploads: Annotated[int, typer.Option(help="Updates held at once (memory bound).")] = 8,
    max_update_mb: Annotated[float, typer.Option(help="Largest update accepted, MiB.")] = 1024.0,
    threads: Annotated[int, typer.Option(help="torch intra-op threads for this process.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    plots: Annotated[bool, typer.Option(help="Draw accuracy.png and faults.png.")] = True,
    ha: Annotated[
        str | None,
        typer.Option(help="Join a failover group: etcd://HOST:PORT[,HOST:PORT...]/PREFIX."),
    ] = None,
    advertise: Annotated[
        str | None, typer.Option(help="With --ha: the HOST:PORT clients reach this one at.")
    ] = None,
    ha_ttl: Annotated[int, typer.Option(help="With --ha: the leader's lease, seconds.")] = 2,
) -> None:
    """Serve a scenario to client processes over gRPC; write summary, history and plots."""
    settings = ServeSettings(
        heartbeat_s=heartbeat_s, patience_s=patience_s, pull_wait_s=pull_wait_s,
        max_uploads=max_uploads, limits=WireLimits(max_bytes=int(max_update_mb * 2**20)),
    )  # fmt: skip
    check_address(listen)
    guard = Guard(
        _authenticator(credentials, allow_any_client),
        limiter=_limiter(calls_per_s, bytes_per_s),
        operator=OperatorToken(read_token(operator_token_file) if operator_token_file else None),
    )
    endpoint = Endpoint(
        listen, _tls(tls_cert, tls_key, tls_client_ca), port_file, metrics_port=metrics_port
    )
    if ha is not None:
        from phalanx.cli.serve_ha import ha_settings, serve_ha  # etcd3gw: the [ha] extra

        if resume is not None:
            raise ConfigError("--ha resumes from the group's committed pointer: drop --resume")
        ha_group = ha_settings(ha, advertise, listen, ha_ttl)
        serve_ha(
            scenario, overrides or [], out, force, threads, endpoint, settings, guard, ha_group,
            served_model,
        )  # fmt: skip
        return
    try:
        _serve(
            scenario, overrides or [], out, force, resume, threads, quiet, plots,
            endpoint, settings, guard,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _authenticator(book: Path | None, allow_any_client: bool) -> Authenticator:
    if book is not None and allow_any_client:
        raise ConfigError("give --credentials or --allow-any-client, not both")
    if book is not None:
        return CredentialBook.load(book)
    if not allow_any_client:
        raise ConfigError(
            "who may join? give --credentials BOOK (phalanx credentials issue), or "
            "--allow-any-client to accept every client id with any credential (only where "
            "no one else can reach the port)"
        )
    return AnyCredential()


def _limiter(calls_per_s: float, bytes_per_s: float) -> ClientLimiter | None:
    if calls_per_s < 0 or bytes_per_s < 0:
        raise ConfigError("--calls-per-s and --bytes-per-s must be >= 0 (0: no limit)")
    if not calls_per_s and not bytes_per_s:
        return None
    return ClientLimiter(calls_per_s, max(1, math.ceil(2 * calls_per_s)), bytes_per_s)


def _tls(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    return server_credentials(cert, key, client_ca)


def coordinator_config(
    scenario: str | None, overrides: list[str], resume: Path | None, threads: int
) -> RunConfig:
    """The run's configuration, in a coordinator process set up to serve it (its torch
    threads, the gRPC runtime's log level): what plain and ``--ha`` serving share."""
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {threads}")
    torch.set_num_threads(threads)
    logging.getLogger("phalanx.runtime.grpc").setLevel(logging.INFO)
    return resolve_config(scenario, overrides, resume)


def _serve(
    scenario: str | None, overrides: list[str], out: Path | None, force: bool,
    resume: Path | None, threads: int, quiet: bool, plots: bool, endpoint: Endpoint,
    settings: ServeSettings, guard: Guard,
) -> None:  # fmt: skip
    wall_start = time.perf_counter()
    config = coordinator_config(scenario, overrides, resume, threads)
    deployment = Deployment(config, served_model(config), settings=settings, guard=guard)
    directory = run_directory(config, out, resume, force=force, threads=threads)
    console = Console()
    console.print(f"run directory: {directory.path}", soft_wrap=True, highlight=False)

    def listening(port: int) -> None:
        host = endpoint.address.rpartition(":")[0]
        console.print(f"listening on {host}:{port}", soft_wrap=True, highlight=False)

    code = 0
    with (
        StopSignals() as signals,
        round_progress(console, name=config.name, rounds=config.rounds, enabled=not quiet) as hook,
    ):
        try:
            result = asyncio.run(
                deployment.run(
                    directory,
                    endpoint,
                    resume=resume is not None,
                    observers=[hook],
                    signals=signals,
                    on_listening=listening,
                )
            )
        except RunInterrupted as stop:
            if not isinstance(stop.result, ServeResult):
                raise typer.Exit(stop.exit_code) from None
            result, code = stop.result, stop.exit_code
    _outputs(console, directory.path, config, result, wall_start, plots=plots)
    if code:
        console.print(
            f"stopped by signal {code - 128} after {result.state.round} finished rounds (the "
            f"round in flight was abandoned); continue with: phalanx serve --resume "
            f"{directory.path} --listen {endpoint.address} ...",
            soft_wrap=True, highlight=False,
        )  # fmt: skip
        raise typer.Exit(code)
    require_progress(config, result.state, result.history, directory.path)


def _outputs(
    console: Console, out_dir: Path, config: RunConfig, result: ServeResult, wall_start: float,
    *, plots: bool,
) -> None:  # fmt: skip
    summary = summarize(
        result.history, wall_time_s=time.perf_counter() - wall_start,
        train_time_s=result.rounds_time_s,
        extra={"scenario": config.name, "seed": config.seed, "runtime": "grpc"},
    )  # fmt: skip
    summary = write_run_outputs(out_dir, result.history, summary, plots=plots)
    console.print(render_summary(summary))
    console.print(f"outputs in {out_dir}/ (summary.json, history.jsonl)")
