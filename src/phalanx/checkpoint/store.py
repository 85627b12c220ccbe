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

A checkpoint is *committed* when it is valid and, for a replicated store, held by at least
``write_quorum`` durable stores. Only committed checkpoints are resumed from, and pruning
never deletes the newest one: a save that missed its quorum is not a commit, whatever store
happens to hold a copy.

A run holds its stores with ``acquire()`` (a ``DirectoryLock`` on each local root, so a
second process is refused with ``LockedError`` naming the holder) and gives them back with
``release()``; ``held(store)`` does both around a ``with`` block. Reading (``list``,
``load``, ``latest_valid``) needs no lock. A save or prune without the lock takes it for its
own duration, so two processes never write one root at once and a save's cleanup of
interrupted saves never removes another process's save in progress.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from phalanx.checkpoint.format import dir_name
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError, ConfigError

logger = logging.getLogger("phalanx.checkpoint")


Reject = Callable[[ServerState], str | None]
"""Says why a valid checkpoint must not be resumed from (another configuration's, say), or
None to accept it."""


@dataclass(frozen=True)
class Quorum:
    """How many durable stores hold a valid copy of a round, against how many must."""

    copies: int  # durable stores holding a valid copy
    required: int  # the write quorum
    stores: int  # stores in the set

    @property
    def met(self) -> bool:
        return self.copies >= self.required


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
    quorum: Quorum | None = None  # replicated stores only; None: a single store

    @property
    def committed(self) -> bool:
        """Valid and, in a replicated store, held by ``write_quorum`` durable stores: a
        checkpoint a resume may use and pruning must keep."""
        return self.valid and (self.quorum is None or self.quorum.met)


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

    @property
    def durable(self) -> bool:
        """Whether a saved checkpoint outlives this process (``memory://`` does not); only
        durable stores count toward a write quorum."""
        ...

    def acquire(self) -> None:
        """Take the store for this process (lock its root, check or write its marker); a
        store in use elsewhere raises ``LockedError`` naming the holder."""
        ...

    def release(self) -> None:
        """Give the store back (idempotent)."""
        ...

    def save(self, state: ServerState, *, prune: bool = True) -> str:
        """Write ``state`` as the checkpoint of its round and, when ``prune``, apply
        retention; return its ref."""
        ...

    def load(self, ref: str) -> ServerState:
        """Read and verify one checkpoint; any defect raises ``CheckpointError``."""
        ...

    def latest_valid(self, *, reject: Reject | None = None) -> ServerState | None:
        """The newest committed checkpoint that verifies and that ``reject`` (if given)
        accepts; None when there is no checkpoint at all; raises ``CheckpointError`` listing
        every problem when checkpoints exist but none is usable."""
        ...

    def rounds(self) -> builtins.list[int]:
        """The rounds of every checkpoint present, oldest first, without verifying them."""
        ...

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every checkpoint, oldest round first, each verified."""
        ...

    def prune(self, keep: int | None = None, *, protect: Collection[int] = ()) -> None:
        """Delete all but the newest ``keep`` checkpoints (None: the store's own ``keep``),
        sparing the store's milestones,
        the rounds in ``protect`` (which the caller vouches are valid) and the newest valid
        checkpoint."""
        ...


@contextmanager
def held(store: CheckpointStore) -> Iterator[CheckpointStore]:
    """``store`` acquired for the ``with`` block, released however it ends."""
    store.acquire()
    try:
        yield store
    finally:
        store.release()


def newest_usable(
    where: str,
    rounds: builtins.list[int],
    load: Callable[[str], ServerState],
    reject: Reject | None,
) -> ServerState | None:
    """The newest of ``rounds`` that loads and that ``reject`` accepts, newest first, each
    skipped one logged; None for no rounds; CheckpointError naming every problem if none."""
    problems: builtins.list[str] = []
    for round_ in reversed(rounds):
        try:
            state = load(dir_name(round_))
        except CheckpointError as exc:
            logger.warning("skipping invalid checkpoint of round %s in %s: %s", round_, where, exc)
            problems.append(str(exc))
            continue
        reason = reject(state) if reject is not None else None
        if reason is None:
            return state
        logger.warning("skipping checkpoint of round %s in %s: %s", round_, where, reason)
        problems.append(f"round {round_}: {reason}")
    if problems:
        raise CheckpointError(f"no valid checkpoint in {where}: " + "; ".join(problems))
    return None


def verifies(load: Callable[[str], ServerState], round_: int) -> bool:
    """Whether the checkpoint of ``round_`` loads (every byte checked)."""
    try:
        load(dir_name(round_))
    except CheckpointError:
        return False
    return True


def check_retention(keep: int, keep_every: int | None) -> tuple[int, int | None]:
    """Validate a retention policy; a store constructed with a bad one fails at once."""
    if keep < 1:
        raise ConfigError(f"checkpoint keep must be >= 1; got keep={keep}")
    if keep_every is not None and keep_every < 1:
        raise ConfigError(f"checkpoint keep_every must be >= 1; got keep_every={keep_every}")
    return keep, keep_every


def doomed(
    rounds: Iterable[int],
    *,
    keep: int,
    keep_every: int | None,
    protect: Collection[int],
    is_valid: Callable[[int], bool],
) -> builtins.list[int]:
    """The rounds retention deletes: neither retained, nor protected, nor the newest valid
    one. Protected rounds count as valid (their caller vouches), so a save that protects the
    round it just wrote, the newest, reads nothing back; ``is_valid`` is asked only about
    rounds newer than every protected one, newest first, until one passes."""
    ordered = sorted(set(rounds), reverse=True)
    kept = retained(ordered, keep=keep, keep_every=keep_every) | set(protect)
    for round_ in ordered:
        if round_ in protect or is_valid(round_):
            kept.add(round_)
            break
    return sorted(r for r in ordered if r not in kept)


def retained(rounds: Iterable[int], *, keep: int, keep_every: int | None) -> set[int]:
    """The rounds a retention policy keeps: the newest ``keep``, plus every round that is a
    multiple of ``keep_every`` (milestones such as every 100th round survive for good, so a
    long run can be rolled back far without keeping every checkpoint)."""
    ordered = sorted(set(rounds))
    kept = set(ordered[-keep:]) if keep > 0 else set()
    if keep_every is not None:
        kept.update(r for r in ordered if r % keep_every == 0)
    return kept
