"""Entry point: ``phalanx run``, ``phalanx report`` and ``phalanx checkpoints``. Errors of
the PhalanxError tree exit with their own code and a one-paragraph message, never a
traceback."""

from __future__ import annotations

import gc
import logging
import sys

import typer
from rich.console import Console

from phalanx.cli.checkpoints import checkpoints_app
from phalanx.cli.report import report
from phalanx.cli.run import run
from phalanx.errors import PhalanxError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="phalanx: fault-tolerant federated learning.",
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("report")(report)
app.add_typer(checkpoints_app, name="checkpoints")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except PhalanxError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(error.exit_code)
    finally:
        # Everything is written; spare the interpreter's final collection from walking
        # torch's objects (about 0.3 s of a short run's exit). atexit handlers still run.
        gc.freeze()
