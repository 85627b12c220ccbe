"""The interface every checkpoint store offers the engine, and the retention rule they share.

A store keeps checkpoints of a ``ServerState`` somewhere (a local directory, an fsspec
filesystem, several of those at once) in the one format of ``phalanx.checkpoint.format``.
The engine needs only this :class:`CheckpointStore` protocol, so a run is checkpointed to a
replicated set of stores exactly as to a single directory, and one contract test suite
(``tests/contract/test_checkpoint_store.py``) holds every implementation to the same rules.

A *ref* is the string a store hands back from ``save`` and takes in ``load``: for a local
store the checkpoint directory's path, for an fsspec store its URL, for a replicated store
the directory name. Every store also accepts the bare directory name (``round-00000042``) as
a ref relative to itself; that is how a replicated store asks each member for one round.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from phalanx.core.state import ServerState
from phalanx.errors import ConfigError


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint as found in a store, with the outcome of verifying it.

    ``valid`` means the round can be loaded. ``stores`` names the locations holding a valid
    copy (a single store names itself when its copy is valid, and nothing otherwise), so a
    replicated listing shows where each round survives. ``problem`` says what is wrong: for
    an invalid checkpoint why it cannot be loaded; for a valid round of a replicated store,
    which copies are damaged (None when every copy found is intact).
    """

    ref: str  # what ``load`` takes to read this checkpoint back
    round: int  # ServerState.round stored in it (taken from the directory name)
    size_bytes: int
    valid: bool
    problem: str | None
    stores: tuple[str, ...] = ()


@runtime_checkable
class CheckpointStore(Protocol):
    """Durable, verified checkpoints of a ``ServerState``, one per round.

    Implementations write a checkpoint so that a crash at any instant leaves either the
    previous set or the new one readable, check every byte against the manifest on the way
    back, and raise ``CheckpointError`` (naming the file and the reason) for any defect.
    """

    @property
    def location(self) -> str:
        """Where the checkpoints live (a path or URL), for listings and error messages."""
        ...

    def save(self, state: ServerState) -> str:
        """Write ``state`` as the checkpoint of its round, prune by retention; return its ref."""
        ...

    def load(self, ref: str) -> ServerState:
        """Read and verify one checkpoint; any defect raises ``CheckpointError``."""
        ...

    def latest_valid(self) -> ServerState | None:
        """The newest checkpoint that verifies; None when there is none at all; raises
        ``CheckpointError`` listing every problem when checkpoints exist but none is valid."""
        ...

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every checkpoint, oldest round first, each verified."""
        ...

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints, sparing the store's milestones."""
        ...


def check_retention(keep: int, keep_every: int | None) -> tuple[int, int | None]:
    """Validate a retention policy; a store constructed with a bad one fails at once."""
    if keep < 1:
        raise ConfigError(f"checkpoint keep must be >= 1; got keep={keep}")
    if keep_every is not None and keep_every < 1:
        raise ConfigError(f"checkpoint keep_every must be >= 1; got keep_every={keep_every}")
    return keep, keep_every


def retained(rounds: Iterable[int], *, keep: int, keep_every: int | None) -> set[int]:
    """The rounds a retention policy keeps: the newest ``keep``, plus every round that is a
    multiple of ``keep_every`` (milestones such as every 100th round survive for good, so a
    long run can be rolled back far without keeping every checkpoint)."""
    ordered = sorted(set(rounds))
    kept = set(ordered[-keep:]) if keep > 0 else set()
    if keep_every is not None:
        kept.update(r for r in ordered if r % keep_every == 0)
    return kept
