"""``RunLifecycle``: one run from its first state to its last committed round.

The engine computes rounds; the lifecycle decides where a run starts (a fresh initial state,
or the newest committed checkpoint of this configuration), makes each round durable through
its commit step, and only then tells the observers. It belongs to no runtime: the embedded
simulation uses it, and so will the networked coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from phalanx.checkpoint import CheckpointStore
from phalanx.config import RunConfig
from phalanx.coordinator.commit import CheckpointCommit, CommitStep
from phalanx.coordinator.digest import config_digest
from phalanx.coordinator.history_log import History
from phalanx.coordinator.resume import newest_of_config, no_checkpoint
from phalanx.coordinator.store_calls import StoreCalls
from phalanx.core.state import ServerState
from phalanx.engine.engine import RoundHook
from phalanx.engine.history import RoundRecord
from phalanx.engine.offload import Offloader
from phalanx.errors import CheckpointError

logger = logging.getLogger("phalanx.coordinator")

CLOSE_WAIT_S = 10.0
"""The longest ``close`` waits for a store call still running (the exit is not held up for
a hung store; the call keeps the store locked instead)."""

RunRound = Callable[[ServerState], Awaitable[tuple[ServerState, RoundRecord]]]


class Evaluations(Protocol):
    """An engine whose rounds may return before their evaluation lands (``Engine``)."""

    def pending(self, record: RoundRecord) -> bool: ...
    async def settle(self, state: ServerState, record: RoundRecord) -> ServerState: ...


class RunLifecycle:
    """Start, run and commit the rounds of one run (see the package docstring)."""

    def __init__(
        self,
        config: RunConfig,
        *,
        store: CheckpointStore | None,
        history: History,
        observers: Sequence[RoundHook] = (),
        commit: CommitStep | None = None,
        offload: Offloader | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.history = history
        self.observers = tuple(observers)
        # Store calls run on threads with checkpoint.timeout_s each (``store_calls``).
        self._owns_offload = offload is None
        self._offload = offload or Offloader()
        self.calls = StoreCalls(config.checkpoint.timeout_s, offload=self._offload)
        self.commit = commit or CheckpointCommit(
            store, history, every=config.checkpoint.every, last_round=config.rounds,
            calls=self.calls,
        )  # fmt: skip
        self.digest = config_digest(config)
        self.state: ServerState | None = None  # the last committed state
        self._held = False

    def start(self, initial: ServerState, *, resume: bool, where: str = "DIR") -> ServerState:
        """The state the run continues from; the history log cut back to match it.

        Resuming without a checkpoint of this configuration is refused
        (``CheckpointError``) before anything is written: silently starting over would
        overwrite what the directory holds. Then the store is taken (``acquire``: every
        local root locked and marked) and held until ``close``, the same store object for
        every save; the history log, which may live in a store root, is written only once
        the root is known to be phalanx's. Both store calls are bounded by
        ``checkpoint.timeout_s`` (``StorageError`` past it)."""
        store = self.store
        if resume:
            if store is None:
                raise CheckpointError("resume needs a checkpoint directory")
            found, skipped = self.calls.run_now(
                lambda: newest_of_config(store, self.digest, rounds=self.config.rounds),
                what=f"reading the checkpoints in {store.location} (checkpoint.timeout_s)",
            )
            if found is None:
                raise no_checkpoint(store, self.digest, skipped, where)
            state = found
        else:
            state = initial.with_changes(config_digest=self.digest, last_record=None)
        if store is not None:
            self.calls.run_now(
                store.acquire,
                what=f"taking the checkpoint store {store.location} (checkpoint.timeout_s)",
            )
            self._held = True
        self.history.start(state.round, state.last_record)
        self.state = state
        return state

    async def run(
        self, run_round: RunRound, state: ServerState, *, evaluations: Evaluations | None = None
    ) -> ServerState:
        """Run rounds until the configured last one; each is committed before observers
        hear of it. Cancellation abandons the round in flight; ``self.state`` stays the last
        committed state.

        With ``evaluations`` (an engine that defers its evaluation), a round whose
        evaluation is still running when it returns is settled and committed by a task of
        its own while the next round already trains in this one: the evaluation overlaps
        the next round instead of delaying it. Only rounds that write no checkpoint are
        committed so (a checkpoint must hold the health table before the next round
        changes it in place), and commits stay in round order: a round's result waits for
        the previous commit. A run that stops with a commit still behind abandons it with
        the round in flight: it resumes from the round before."""
        behind: asyncio.Task[None] | None = None
        try:
            while state.round < self.config.rounds:
                state, record = await run_round(state)
                if behind is not None:
                    await behind  # the previous round's commit (and any error of it) first
                    behind = None
                if evaluations is not None and self._overlaps(state, record, evaluations):
                    behind = asyncio.create_task(self._settle(state, record, evaluations))
                    continue
                if evaluations is not None:
                    state = await evaluations.settle(state, record)
                await self._commit(state, record)
                await asyncio.sleep(0)  # a stop signal lands here at the latest
            return state
        finally:
            if behind is not None:
                behind.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await behind

    def _overlaps(self, state: ServerState, record: RoundRecord, evaluations: Evaluations) -> bool:
        """Whether the round that ended in ``state`` is committed behind the next one."""
        commit = self.commit
        return (
            evaluations.pending(record)
            and state.round < self.config.rounds
            and isinstance(commit, CheckpointCommit)
            and not commit.due(state)
        )

    async def _settle(
        self, state: ServerState, record: RoundRecord, evaluations: Evaluations
    ) -> None:
        await self._commit(await evaluations.settle(state, record), record)

    async def _commit(self, state: ServerState, record: RoundRecord) -> None:
        await self.commit.commit(state)
        self.state = state
        for observe in self.observers:
            observe(state, record)

    def close(self) -> None:
        """Close the history log and give the store back (safe to call more than once, and
        after a ``start`` that failed). A store call still running (a save that timed out,
        or one a stop signal abandoned) is waited for, up to ``checkpoint.timeout_s`` but no
        more than ``CLOSE_WAIT_S``; if it runs on past that, the store's
        lock goes with it: released when it ends, so nothing else writes the store (or
        resumes from it) while it may still land a checkpoint."""
        try:
            self.history.close()
        finally:
            store, held, self._held = self.store, self._held, False
            if store is not None and held:
                wait_s = min(self.calls.timeout_s, CLOSE_WAIT_S)
                if not self.calls.drain(wait_s):
                    logger.warning(
                        "a call to checkpoint store %s still runs after %g s; the store stays "
                        "locked until it ends", store.location, wait_s,
                    )  # fmt: skip
                self.calls.when_idle(store.release)
            if self._owns_offload:
                self._offload.close()
