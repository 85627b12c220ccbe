"""The live progress bar of ``phalanx run``: round, accuracy, successes and failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from phalanx.core.state import ServerState
from phalanx.engine.engine import RoundHook
from phalanx.engine.history import RoundRecord


def _ignore(state: ServerState, record: RoundRecord) -> None:
    return None


@contextmanager
def round_progress(
    console: Console, *, name: str, rounds: int, enabled: bool
) -> Iterator[RoundHook]:
    """Yield a round hook that advances a progress bar (a no-op when disabled)."""
    if not enabled:
        yield _ignore
        return
    # rich.progress costs ~75 ms to import; quiet runs skip it.
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
            accuracy = record.metrics.get("accuracy")
            shown = f"{accuracy:.3f}" if accuracy is not None else "-"
            outcome = "committed" if record.committed else "[red]discarded[/]"
            status = (
                f"acc {shown}  ok {len(record.accepted)}  failed {len(record.events)}  {outcome}"
            )
            progress.update(task_id, completed=state.round, status=status)

        yield on_round
