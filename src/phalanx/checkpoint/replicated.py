"""One checkpoint, several stores: losing or corrupting one copy costs nothing.

``ReplicatedCheckpointStore`` writes each checkpoint to every member store in turn and
counts the acknowledgements; fewer than ``write_quorum`` is a failed save, raised with each
failed store and its error, so the engine never reports that round as committed. Copies
that did land stay where they are (a later resume may use them: the state of a round is
the same wherever it was written), and partial copies are left to each store's own cleanup
(a local store removes its temp directories, an fsspec store its manifest-less ones).

Reads take the newest round that is valid in *any* member: a copy that is missing or
corrupt in one store is read from another. A member that cannot be reached at all is
logged and skipped, like a damaged copy.

``build_store`` turns a run's ``CheckpointConfig`` into a store: the run's own checkpoint
directory, replicated to ``stores`` (plain paths or fsspec URLs) when any are configured.
"""

from __future__ import annotations

import builtins
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from phalanx.checkpoint.format import dir_name, parse_dir_name
from phalanx.checkpoint.fsspec_store import FsspecCheckpointStore
from phalanx.checkpoint.local import LocalCheckpointStore
from phalanx.checkpoint.store import CheckpointInfo, CheckpointStore
from phalanx.config import CheckpointConfig
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError, ConfigError

logger = logging.getLogger("phalanx.checkpoint")

# What a member store may raise when it fails; anything else is a bug and propagates.
_STORE_ERRORS = (CheckpointError, OSError)


class ReplicatedCheckpointStore:
    """Writes every checkpoint to each of ``stores``; a save succeeds when at least
    ``write_quorum`` of them (default: all) acknowledge it. Its refs are directory names
    (``round-00000042``), which every member store accepts."""

    def __init__(
        self, stores: Sequence[CheckpointStore], *, write_quorum: int | None = None
    ) -> None:
        self.stores = tuple(stores)
        locations = [store.location for store in self.stores]
        if not self.stores:
            raise ConfigError("a replicated checkpoint store needs at least one store")
        if len(set(locations)) != len(locations):
            raise ConfigError(f"checkpoint stores must be distinct; got {locations}")
        quorum = len(self.stores) if write_quorum is None else write_quorum
        if not 1 <= quorum <= len(self.stores):
            raise ConfigError(
                f"write quorum needs 1 <= W <= number of stores; got W={quorum}, "
                f"stores={len(self.stores)}"
            )
        self.write_quorum = quorum

    @property
    def location(self) -> str:
        return " + ".join(store.location for store in self.stores)

    def save(self, state: ServerState) -> str:
        """Save to every store; raise ``CheckpointError`` naming each failure when fewer than
        ``write_quorum`` acknowledged."""
        failures: builtins.list[str] = []
        for store in self.stores:
            try:
                store.save(state)
            except _STORE_ERRORS as exc:
                logger.warning("checkpoint of round %s not written to %s: %s",
                               state.round, store.location, exc)  # fmt: skip
                failures.append(f"{store.location}: {exc}")
        acknowledged = len(self.stores) - len(failures)
        if acknowledged < self.write_quorum:
            raise CheckpointError(
                f"checkpoint of round {state.round} reached {acknowledged} of "
                f"{len(self.stores)} stores, below the write quorum of {self.write_quorum}; "
                "failed: " + "; ".join(failures)
            )
        return dir_name(state.round)

    def load(self, ref: str) -> ServerState:
        """The round named by ``ref`` (its directory name, or any path ending in one) from the
        first store whose copy verifies."""
        name = ref.rstrip("/").rsplit("/", 1)[-1]
        if parse_dir_name(name) is None:
            raise CheckpointError(f"{ref}: not a checkpoint directory (round-NNNNNNNN)")
        problems: builtins.list[str] = []
        for store in self.stores:
            try:
                return store.load(name)
            except _STORE_ERRORS as exc:
                problems.append(f"{store.location}: {exc}")
        raise CheckpointError(f"{name}: no valid copy in any store: " + "; ".join(problems))

    def latest_valid(self) -> ServerState | None:
        """The newest round valid in any store; None when no store holds a checkpoint.

        Each store falls back past its own damaged copies, then the newest of their answers
        wins; this reads one checkpoint per store, a cost paid once, at resume."""
        newest: ServerState | None = None
        problems: builtins.list[str] = []
        for store in self.stores:
            try:
                state = store.latest_valid()
            except _STORE_ERRORS as exc:
                logger.warning("no usable checkpoint in %s: %s", store.location, exc)
                problems.append(f"{store.location}: {exc}")
                continue
            if state is not None and (newest is None or state.round > newest.round):
                newest = state
        if newest is None and problems:
            raise CheckpointError("no valid checkpoint in any store: " + "; ".join(problems))
        return newest

    def list(self) -> builtins.list[CheckpointInfo]:
        """One entry per round found in any store, oldest first; ``stores`` names the stores
        holding a valid copy and ``problem`` each damaged copy."""
        copies: dict[int, builtins.list[CheckpointInfo]] = defaultdict(builtins.list)
        for store in self.stores:
            try:
                infos = store.list()
            except _STORE_ERRORS as exc:
                logger.warning("cannot list checkpoints in %s: %s", store.location, exc)
                continue
            for info in infos:
                copies[info.round].append(_named(info, store.location))
        return [_merge(round_, copies[round_]) for round_ in sorted(copies)]

    def prune(self, keep: int) -> None:
        """Prune every store; raise naming each store that failed, after trying them all."""
        failures: builtins.list[str] = []
        for store in self.stores:
            try:
                store.prune(keep)
            except _STORE_ERRORS as exc:
                failures.append(f"{store.location}: {exc}")
        if failures:
            raise CheckpointError("cannot prune checkpoints: " + "; ".join(failures))


def _named(info: CheckpointInfo, location: str) -> CheckpointInfo:
    """Prefix a copy's problem with its store, so a merged listing says which copy is bad
    (unless it already starts with it, as the local and fsspec stores' messages do)."""
    if info.problem is None or info.problem.startswith(location):
        return info
    return CheckpointInfo(info.ref, info.round, info.size_bytes, info.valid,
                          f"{location}: {info.problem}", info.stores)  # fmt: skip


def _merge(round_: int, copies: builtins.list[CheckpointInfo]) -> CheckpointInfo:
    """One round's copies as one entry: valid if any copy is."""
    good = [info for info in copies if info.valid]
    problems = [info.problem for info in copies if info.problem is not None]
    size = good[0].size_bytes if good else max(info.size_bytes for info in copies)
    holders = tuple(location for info in good for location in info.stores)
    return CheckpointInfo(
        dir_name(round_), round_, size, bool(good), "; ".join(problems) or None, holders
    )


def build_store(config: CheckpointConfig, default_root: Path) -> CheckpointStore:
    """The run's checkpoint store: ``default_root`` alone, or replicated with
    ``config.stores`` under ``config.write_quorum`` (None: every store must acknowledge)."""
    locations = [str(default_root), *config.stores]
    stores = [_open(location, config) for location in locations]
    local_roots = [Path(s.location).resolve() for s in stores if not _is_url(s.location)]
    if len(set(local_roots)) != len(local_roots):
        raise ConfigError(
            f"checkpoint stores must be distinct directories; got {locations} "
            f"(the first is the run's own checkpoint directory)"
        )
    if len(stores) == 1:
        return stores[0]
    return ReplicatedCheckpointStore(stores, write_quorum=config.write_quorum)


def _open(location: str, config: CheckpointConfig) -> CheckpointStore:
    """A plain path is a local store (atomic renames); a URL goes through fsspec."""
    if _is_url(location):
        return FsspecCheckpointStore(location, keep=config.keep, keep_every=config.keep_every)
    return LocalCheckpointStore(Path(location), keep=config.keep, keep_every=config.keep_every)


def _is_url(location: str) -> bool:
    return "://" in location
