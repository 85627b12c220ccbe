"""``phalanx client``: one client process of a networked deployment.

It joins the coordinator at ``--server`` as client ``--id`` with the credential in
``--token-file``, then pulls tasks, trains and pushes until the run is over (exit 0).
``--server A,B,C`` names a group of coordinators of which one leads: the client follows the
leader (a standby's hint, else the next address) and refuses a deposed leader's epoch.
What it trains is the simulation's client of the same id: a built-in workload's shard
(``--scenario``, the seed scenario by default) or a user's app (``--app module:object``).
Exit codes: 0 the run finished; 2 a bad flag or scenario; 6 the coordinator unreachable for
``--give-up-s``; 10 another protocol version (the message names both); 11 the credential
refused; 12 a coordinator answered for another run than the one joined first; 143 SIGTERM
(after a goodbye to the coordinator).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import torch
import typer

from phalanx.cli.run import scenario_file
from phalanx.config import load_config
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.client import (
    AgentOptions,
    Deadlines,
    Shard,
    TlsFiles,
    app_shard,
    builtin_shard,
    load_app,
)
from phalanx.runtime.grpc.client.assemble import ClientSettings, build_agent

SIGTERM_EXIT = 143


def read_token(path: Path) -> str:
    """The credential: the file's text, surrounding whitespace removed."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file {path}: not a text file") from None
    if not token:
        raise ConfigError(f"--token-file {path} is empty")
    return token


def one_thread(threads: int) -> None:
    """torch's thread pools set deliberately: training here is one client's, small."""
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {threads}")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran
        torch.set_num_interop_threads(1)


def load_shard(
    scenario: str | None, overrides: list[str], app: str | None, client: int, *, byzantine: bool
) -> Shard:
    config = load_config(scenario_file(scenario), overrides)
    if app is not None:
        return app_shard(load_app(app), config, client, byzantine=byzantine)
    return builtin_shard(config, client, byzantine=byzantine)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(SIGTERM_EXIT)


def client(
    server: Annotated[
        str, typer.Option(help="The coordinator, HOST:PORT, or several: HOST:PORT,HOST:PORT,...")
    ],
    client_id: Annotated[int, typer.Option("--id", help="This client's id.")],
    token_file: Annotated[Path, typer.Option(help="File holding this client's credential.")],
    scenario: Annotated[
        str | None,
        typer.Option(help="NAME|PATH: the run's scenario (workload shard, seed, faults)."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a scenario key.")
    ] = None,
    app: Annotated[
        str | None, typer.Option(help="module:object giving model, clients and train.")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="Play a fault: KIND[:CORRUPTION]@ROUND[.ATTEMPT], e.g. crash@2."),
    ] = None,
    inject_faults: Annotated[
        bool, typer.Option(help="Play the scenario's fault plan and Byzantine role.")
    ] = False,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM root CA for the coordinator.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM client certificate (mTLS).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM client key (mTLS).")] = None,
    tls_server_name: Annotated[
        str | None, typer.Option(help="Name the coordinator's certificate must carry.")
    ] = None,
    backoff_cap_s: Annotated[float, typer.Option(help="Longest reconnect backoff.")] = 5.0,
    backoff_seed: Annotated[int | None, typer.Option(help="Seed of the jitter.")] = None,
    give_up_s: Annotated[
        float, typer.Option(help="Exit (code 6) after the coordinator is unreachable this long.")
    ] = 300.0,
    poll_s: Annotated[float, typer.Option(help="Deadline of one PullTask long-poll.")] = 60.0,
    hang_s: Annotated[float | None, typer.Option(help="How long an injected hang lasts.")] = None,
    threads: Annotated[int, typer.Option(help="torch intra-op threads.")] = 1,
    verbose: Annotated[bool, typer.Option(help="Log each task.")] = False,
) -> None:
    """Join a coordinator and train for it until the run is over."""
    one_thread(threads)
    if verbose:
        logging.getLogger("phalanx").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _terminate)
    credential = read_token(token_file)
    shard = load_shard(scenario, overrides or [], app, client_id, byzantine=inject_faults)
    settings = ClientSettings(
        server=server, credential=credential, tls=TlsFiles(tls_ca, tls_cert, tls_key),
        server_name=tls_server_name, backoff_cap_s=backoff_cap_s, backoff_seed=backoff_seed,
        deadlines=Deadlines(poll_s=poll_s),
        options=AgentOptions(give_up_s=give_up_s, hang_s=hang_s),
        faults=tuple(fault or ()), inject_faults=inject_faults,
    )  # fmt: skip
    agent = build_agent(shard, settings)
    agent.run()
    typer.echo(f"client {client_id}: the run finished; {agent.stats.line()}")
