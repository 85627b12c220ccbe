"""Entry point: ``phalanx run``, ``launch``, ``serve``, ``client``, ``report``, ``checkpoints``,
``list``, ``credentials``, ``certs`` and ``status``.

``main`` is the one boundary where what escapes a command becomes an exit code and one
line on stderr, never a traceback: a ``PhalanxError`` exits with its own code; an ``OSError``
that no inner layer translated is a ``StorageError`` naming the path (exit 9); running out
of memory is exit 3; Ctrl-C is exit 130 (the run lifecycle stops gracefully first; typer
turns the KeyboardInterrupt into that code). Codes: ``phalanx/errors.py`` and README.

An invocation imports only the command it names (``COMMANDS``; ``--help`` imports them
all), and ends through ``exiting.leave``: without the interpreter's teardown once the
command has declared its outputs durable (``phalanx run`` does), the ordinary way otherwise.
"""

from __future__ import annotations

import errno
import gc
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated, Any

import typer
from rich.console import Console

from phalanx.cli import exiting
from phalanx.cli.startup import frozen_imports
from phalanx.errors import PhalanxError, StorageError, WorkloadError

# name -> (module, attribute): a command function or a Typer group, in the order of --help.
# A command is imported only when it is the one invoked (or for the full --help): `phalanx
# run` never imports grpc, protobuf, cryptography or prometheus, which the gRPC commands
# need (about 0.15 s of a 2 s run).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("phalanx.cli.run_command", "run"),
    "serve": ("phalanx.cli.serve", "serve"),
    "report": ("phalanx.cli.report", "report"),
    "list": ("phalanx.cli.listing", "list_command"),
    "client": ("phalanx.cli.client", "client"),
    "launch": ("phalanx.cli.launch", "launch"),
    "checkpoints": ("phalanx.cli.checkpoints", "checkpoints_app"),
    "credentials": ("phalanx.cli.credentials", "credentials_app"),
    "certs": ("phalanx.cli.certs", "certs_app"),
    "status": ("phalanx.cli.status", "status"),
}

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


def build_app(names: Sequence[str] = tuple(COMMANDS)) -> typer.Typer:
    """The ``phalanx`` app with the commands ``names`` (all by default), imported now."""
    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        help="phalanx: fault-tolerant federated learning.",
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    with frozen_imports():
        for name in names:
            module, attribute = COMMANDS[name]
            command = getattr(importlib.import_module(module), attribute)
            if isinstance(command, typer.Typer):
                app.add_typer(command, name=name)
            else:
                app.command(name)(command)
    return app


def requested(args: Sequence[str]) -> list[str]:
    """The commands an invocation needs: the one it names, or all of them (``--help``, no
    command, an unknown name: typer lists them or suggests one)."""
    named = next((arg for arg in args if not arg.startswith("-")), None)
    return [named] if named in COMMANDS else list(COMMANDS)


def __getattr__(name: str) -> Any:
    """``app``: every command, built on first use (``from phalanx.cli.app import app``)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = app = build_app()
    return app


def _report(error: PhalanxError) -> int:
    Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    return error.exit_code


def invoke(args: Sequence[str]) -> int | str | None:
    """Run the command ``args`` name; what it exits with (``SystemExit``'s code). A foreign
    error that stands for no ``PhalanxError`` is a bug: it propagates, with its traceback."""
    try:
        build_app(requested(args))(args=list(args))
    except SystemExit as done:  # typer always ends so
        return done.code
    except KeyboardInterrupt:  # typer maps it to 130 inside a command; this is the rest
        return INTERRUPTED_EXIT
    except (PhalanxError, OSError, MemoryError, RuntimeError) as error:
        known = translate(error)
        if known is None:
            raise
        return _report(known)
    return 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exiting.forget()
    try:
        code = invoke(sys.argv[1:])
    finally:
        # Everything is written; spare the interpreter's final collection from walking
        # torch's objects (about 0.3 s of a short run's exit). atexit handlers still run.
        gc.freeze()
    exiting.leave(code)
