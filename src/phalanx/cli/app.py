"""Entry point: ``phalanx run``, ``launch``, ``serve``, ``client``, ``report``, ``checkpoints``,
``list``, ``credentials``, ``certs`` and ``status``.

``main`` is the one boundary where what escapes a command becomes an exit code and one
line on stderr, never a traceback: a ``PhalanxError`` exits with its own code; an ``OSError``
that no inner layer translated is a ``StorageError`` naming the path (exit 9); running out
of memory is exit 3; Ctrl-C is exit 130 (the run lifecycle stops gracefully first; typer
turns the KeyboardInterrupt into that code). Codes: ``phalanx/errors.py`` and README.
"""

from __future__ import annotations

import gc

# Importing the commands (torch above all) allocates ~190k long-lived objects, and the
# collector would walk them all several times on the way: about 0.25 s of CPU, a tenth of
# the default run. Collect nothing until they are in, then freeze them: later collections
# (and the last one, at exit) skip them. A garbage cycle made while importing is kept.
_COLLECTING = gc.isenabled()
gc.disable()

import errno  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Annotated, NoReturn  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from phalanx.cli.certs import certs_app  # noqa: E402
from phalanx.cli.checkpoints import checkpoints_app  # noqa: E402
from phalanx.cli.client import client  # noqa: E402
from phalanx.cli.credentials import credentials_app  # noqa: E402
from phalanx.cli.launch import launch  # noqa: E402
from phalanx.cli.listing import list_command  # noqa: E402
from phalanx.cli.report import report  # noqa: E402
from phalanx.cli.run import run  # noqa: E402
from phalanx.cli.serve import serve  # noqa: E402
from phalanx.cli.status import status  # noqa: E402
from phalanx.errors import PhalanxError, StorageError, WorkloadError  # noqa: E402

gc.freeze()
if _COLLECTING:
    gc.enable()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="phalanx: fault-tolerant federated learning.",
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("serve")(serve)
app.command("report")(report)
app.command("list")(list_command)
app.command("client")(client)
app.command("launch")(launch)
app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(credentials_app, name="credentials")
app.add_typer(certs_app, name="certs")
app.command("status")(status)

INTERRUPTED_EXIT = 130  # 128 + SIGINT
_OUT_OF_MEMORY = "can't allocate memory"  # torch's CPU allocator raises RuntimeError with it
_STORAGE_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.EISDIR: "the path is a directory",
}


def version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    try:
        return metadata.version("phalanx")
    except metadata.PackageNotFoundError:
        from phalanx import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"phalanx {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """phalanx: fault-tolerant federated learning."""


def storage_error(error: OSError) -> StorageError:
    """An OS error that reached the CLI, as the one line a user needs: which path, and why."""
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    reason = _STORAGE_HINTS.get(error.errno or 0) or error.strerror or str(error)
    where = " -> ".join(paths) or "a file"
    return StorageError(f"cannot write or read {where}: {reason}")


def out_of_memory(error: BaseException) -> WorkloadError:
    detail = str(error).partition(_OUT_OF_MEMORY)[2].strip(" :.") if error.args else ""
    shown = f" ({detail.split('. Error code')[0]})" if detail else ""
    return WorkloadError(
        f"out of memory{shown}: the model or data set is too large for this machine; "
        "shrink the workload (e.g. workload.hidden, workload.num_clients)"
    )


def translate(error: BaseException) -> PhalanxError | None:
    """The PhalanxError a foreign exception escaping a command stands for; None: a bug."""
    if isinstance(error, PhalanxError):
        return error
    if isinstance(error, OSError):
        return storage_error(error)
    if isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and _OUT_OF_MEMORY in str(error)
    ):
        return out_of_memory(error)
    return None


def _fail(error: PhalanxError) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    sys.exit(error.exit_code)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:  # typer maps it to 130 inside a command; this is the rest
        sys.exit(INTERRUPTED_EXIT)
    except (PhalanxError, OSError, MemoryError, RuntimeError) as error:
        known = translate(error)
        if known is None:
            raise
        _fail(known)
    finally:
        # Everything is written; spare the interpreter's final collection from walking
        # torch's objects (about 0.3 s of a short run's exit). atexit handlers still run.
        gc.freeze()
