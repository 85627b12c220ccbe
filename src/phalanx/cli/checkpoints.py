"""``phalanx checkpoints list|verify DIR``: what a run could resume from, and whether.

DIR is a run directory (its ``config.json`` names the replica stores, if any; without one,
``DIR/checkpoints``), a checkpoints directory itself, or an fsspec URL. ``verify`` is the
check to run before relying on a resume: exit 0 when the newest checkpoint is committed
(valid and, with replicas, held by ``write_quorum`` durable stores), else exit 5
(``CheckpointError.exit_code``) with every problem found and the round a resume would use.
Both commands only read: they take no lock and work beside a running run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from phalanx.checkpoint import (
    CheckpointInfo,
    CheckpointStore,
    FsspecCheckpointStore,
    LocalCheckpointStore,
    build_store,
)
from phalanx.cli.run import CONFIG_FILE
from phalanx.config import build_config
from phalanx.errors import CheckpointError, ConfigError

checkpoints_app = typer.Typer(no_args_is_help=True, help="Inspect and verify a run's checkpoints.")

Target = Annotated[
    str,
    typer.Argument(
        metavar="DIR",
        help="A run directory, a checkpoints directory, or an fsspec URL of one.",
        show_default=False,
    ),
]


def open_store(target: str) -> CheckpointStore:
    """The store a run in ``target`` checkpoints to, as its saved configuration says."""
    if "://" in target:
        return FsspecCheckpointStore(target)
    path = Path(target)
    if not path.is_dir():
        raise typer.BadParameter(f"{target} is not a directory", param_hint="DIR")
    if (path / CONFIG_FILE).is_file():
        try:
            tree = json.loads((path / CONFIG_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path / CONFIG_FILE}: cannot read ({exc})") from exc
        return build_store(build_config(tree).checkpoint, path / "checkpoints")
    if (path / "checkpoints").is_dir():
        return LocalCheckpointStore(path / "checkpoints")
    return LocalCheckpointStore(path)


@checkpoints_app.command("list")
def list_checkpoints(target: Target) -> None:
    """Every checkpoint: round, size, valid or why not, and which stores hold a valid copy."""
    store = open_store(target)
    infos = store.list()
    console = Console()
    if not infos:
        console.print(f"no checkpoints in {store.location}")
        return
    table = Table(title=f"checkpoints in {store.location}")
    table.add_column("round", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")  # fold, never elide: the file name matters
    table.add_column("stores", overflow="fold")
    for info in infos:
        table.add_row(str(info.round), _size(info.size_bytes), _status(info),
                      "\n".join(info.stores) or "-")  # fmt: skip
    console.print(table)


@checkpoints_app.command("verify")
def verify_checkpoints(target: Target) -> None:
    """Exit 0 if the newest checkpoint is committed; else exit 5, listing every problem."""
    store = open_store(target)
    infos = store.list()
    out, err = Console(), Console(stderr=True)
    for info in infos:
        if info.problem is not None:
            err.print(f"round {info.round}: {info.problem}", highlight=False)
    if not infos:
        err.print(f"no checkpoints in {store.location}", highlight=False)
        raise typer.Exit(CheckpointError.exit_code)
    newest = infos[-1]
    if not newest.committed:
        fallback = next((i.round for i in reversed(infos) if i.committed), None)
        then = f"a resume would use round {fallback}" if fallback is not None else "none usable"
        what = "invalid" if not newest.valid else f"{_below_quorum(newest)}: not a commit"
        err.print(f"newest checkpoint (round {newest.round}) is {what}; {then}", highlight=False)
        raise typer.Exit(CheckpointError.exit_code)
    held = ", ".join(newest.stores)
    out.print(f"round {newest.round} is valid and committed (in {held})", highlight=False)


def _status(info: CheckpointInfo) -> str:
    if not info.valid:
        return f"INVALID: {info.problem}"
    status = "valid" if info.committed else f"{_below_quorum(info)}, not a commit"
    return status if info.problem is None else f"{status}; damaged copies: {info.problem}"


def _below_quorum(info: CheckpointInfo) -> str:
    """ "valid, below write quorum (1 of 3 stores, 2 required)"."""
    quorum = info.quorum
    if quorum is None:
        return "valid"
    return (
        f"valid, below write quorum ({quorum.copies} of {quorum.stores} stores, "
        f"{quorum.required} required)"
    )


def _size(size: int) -> str:
    """Bytes in binary units, as ``du -h`` would say them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
