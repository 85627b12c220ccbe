"""The commit step: what makes a finished round durable, in the one order that survives a
crash at any instant.

1. the checkpoint, when the cadence says so (``every`` rounds and the last round), after the
   history log's earlier lines are synced; a store that misses its write quorum raises
   ``CheckpointError``, one that takes longer than ``checkpoint.timeout_s`` raises
   ``StorageError`` (``store_calls``), and the round is never reported;
2. the round's record, appended to the history log (synced before the next checkpoint and
   at close: lines after the newest checkpoint are cut on resume anyway);
3. only then the observers (progress, ``on_round`` hooks) hear of it (``RunLifecycle``).

A crash between 1 and 2 loses no record: the checkpoint carries the record of its own last
round (``ServerState.last_record``) and a resume appends it again. This is one small object so
that a deployment can replace it (a fenced commit that is one etcd transaction) while the
rest of the lifecycle stays as it is.
"""

from __future__ import annotations

from typing import Protocol

from phalanx.checkpoint import CheckpointStore
from phalanx.checkpoint.crashpoints import crash_point
from phalanx.coordinator.history_log import History
from phalanx.coordinator.store_calls import StoreCalls
from phalanx.core.state import ServerState


class CommitStep(Protocol):
    """Make the round that ended in ``state`` durable (raise if it cannot be)."""

    async def commit(self, state: ServerState) -> None: ...


class CheckpointCommit:
    """Checkpoint per cadence into ``store`` (None: no checkpoints), then log the record.
    The save runs off the event loop through ``calls`` (with its timeout)."""

    def __init__(
        self,
        store: CheckpointStore | None,
        history: History,
        *,
        every: int,
        last_round: int,
        calls: StoreCalls,
    ) -> None:
        self.store = store
        self.history = history
        self.every = every
        self.last_round = last_round
        self.calls = calls

    def due(self, state: ServerState) -> bool:
        """Whether the round that ended in ``state`` is checkpointed."""
        if self.store is None or self.every <= 0:
            return False
        return state.round % self.every == 0 or state.round == self.last_round

    async def commit(self, state: ServerState) -> None:
        store = self.store
        if self.due(state) and store is not None:
            self.history.sync()  # the lines this checkpoint vouches for, durable first
            crash_point("engine.before_checkpoint")
            await self.calls.run(
                lambda: store.save(state),
                what=f"checkpoint save of round {state.round} to {store.location} "
                f"(checkpoint.timeout_s; the last commit stays round {state.round - 1} or earlier)",
            )
        if state.last_record is not None:
            self.history.append(state.last_record)
