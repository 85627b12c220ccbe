"""Progress of ``phalanx run``: a live bar on a terminal, one log line per round elsewhere.

Under CI, ``nohup`` or ``| tee`` a bar draws nothing until the run ends, so there each
round the run lifecycle reports (only once it is durable) is one flushed line: round,
accuracy, accepted and failed updates, committed or discarded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from phalanx.core.state import ServerState
from phalanx.engine.engine import RoundHook
from phalanx.engine.history import RoundRecord


def _ignore(state: ServerState, record: RoundRecord) -> None:
    return None


def round_status(record: RoundRecord) -> str:
    """What one round did, in a few words (shared by the bar and the log lines)."""
    accuracy = record.metrics.get("accuracy")
    shown = f"{accuracy:.3f}" if accuracy is not None else "-"
    outcome = "committed" if record.committed else "discarded"
    return f"acc {shown}  accepted {len(record.accepted)}  failed {len(record.events)}  {outcome}"


@contextmanager
def round_progress(
    console: Console, *, name: str, rounds: int, enabled: bool
) -> Iterator[RoundHook]:
    """Yield a round hook: a progress bar on a terminal, log lines otherwise, or a no-op."""
    if not enabled:
        yield _ignore
    elif console.is_terminal:
        with _bar(console, name=name, rounds=rounds) as hook:
            yield hook
    else:
        yield _log_lines(console, name=name, rounds=rounds)


def _log_lines(console: Console, *, name: str, rounds: int) -> RoundHook:
    width = len(str(rounds))

    def on_round(state: ServerState, record: RoundRecord) -> None:
        done = f"{record.round + 1:>{width}}/{rounds}"
        line = f"{name} [{done}] round {record.round}: {round_status(record)}"
        console.file.write(line + "\n")
        console.file.flush()

    return on_round


@contextmanager
def _bar(console: Console, *, name: str, rounds: int) -> Iterator[RoundHook]:
    # rich.progress costs ~75 ms to import; runs that do not draw a bar skip it.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )  # fmt: skip

    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task_id = progress.add_task(f"{name} round", total=rounds, status="")

        def on_round(state: ServerState, record: RoundRecord) -> None:
            status = round_status(record).replace("discarded", "[red]discarded[/]")
            progress.update(task_id, completed=record.round + 1, status=status)

        yield on_round
