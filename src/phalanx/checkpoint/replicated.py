"""One checkpoint, several stores: losing or corrupting one copy costs nothing.

``ReplicatedCheckpointStore`` writes each checkpoint to every member store in turn and
counts the acknowledgements of durable stores (``memory://`` holds a copy but never counts);
fewer than ``write_quorum`` is a failed save, raised with each failed store and its error,
so the round is never reported as committed. Copies that did land stay where they are, and
partial copies are left to each store's own cleanup.

The quorum holds on read and on prune too. A round is *committed* when at least
``write_quorum`` durable stores hold a valid copy; ``latest_valid`` returns the newest
committed round (a copy missing or corrupt in one store is read from another) and skips,
with a warning, a round that reached fewer stores: a failed save left in the primary is not
resumed from, so a supervisor restarting a run that keeps missing the quorum does not walk
the primary forward. Members never prune on their own inside a replicated save: only a
committed save prunes, and every member spares the newest committed round, so retention
cannot delete the last checkpoint that reached the quorum. A member that cannot be reached
at all is logged and skipped, like a damaged copy.

``build_store`` turns a run's ``CheckpointConfig`` into a store: the run's own checkpoint
directory, replicated to ``stores`` (plain paths or fsspec URLs) when any are configured.
"""

from __future__ import annotations

import builtins
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from phalanx.checkpoint.format import dir_name, parse_dir_name
from phalanx.checkpoint.fsspec_store import FsspecCheckpointStore
from phalanx.checkpoint.local import LocalCheckpointStore
from phalanx.checkpoint.store import CheckpointInfo, CheckpointStore, Quorum, Reject
from phalanx.config import CheckpointConfig
from phalanx.core.state import ServerState
from phalanx.errors import CheckpointError, ConfigError

logger = logging.getLogger("phalanx.checkpoint")

# What a member store may raise when it fails; anything else is a bug and propagates.
_STORE_ERRORS = (CheckpointError, OSError)


class ReplicatedCheckpointStore:
    """Writes every checkpoint to each of ``stores``; a save succeeds when at least
    ``write_quorum`` durable stores (default: all) acknowledge it. Its refs are directory
    names (``round-00000042``), which every member store accepts."""

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
        volatile = [store.location for store in self.stores if not store.durable]
        if quorum > len(self.stores) - len(volatile):
            raise ConfigError(
                f"write quorum W={quorum} needs {quorum} durable stores; "
                f"{', '.join(volatile)} cannot count (not durable), leaving "
                f"{len(self.stores) - len(volatile)}"
            )
        self.write_quorum = quorum

    @property
    def location(self) -> str:
        return " + ".join(store.location for store in self.stores)

    @property
    def durable(self) -> bool:
        return True  # a save succeeds only once W durable stores hold it

    def acquire(self) -> None:
        """Acquire every member that can be reached; a member that cannot (its disk gone) is
        logged and skipped, as a save skips it, as long as ``write_quorum`` durable members
        remain. A refusal (another process's lock, a directory that is not phalanx's, or too
        few members for the quorum) releases those already taken."""
        taken: builtins.list[CheckpointStore] = []
        failures: builtins.list[str] = []
        try:
            for store in self.stores:
                try:
                    store.acquire()
                except _STORE_ERRORS as exc:
                    logger.warning("checkpoint store %s unavailable: %s", store.location, exc)
                    failures.append(f"{store.location}: {exc}")
                    continue
                taken.append(store)
            reachable = sum(store.durable for store in taken)
            if reachable < self.write_quorum:
                raise CheckpointError(
                    f"{reachable} of {len(self.stores)} checkpoint stores can be reached, "
                    f"below the write quorum of {self.write_quorum}; failed: "
                    + ("; ".join(failures) or "none (the others are not durable)")
                    + "; if a store is lost for good, run with checkpoint.write_quorum set to "
                    "the durable stores that remain"
                )
        except BaseException:
            for store in taken:
                store.release()
            raise

    def release(self) -> None:
        for store in self.stores:
            store.release()

    def save(self, state: ServerState, *, prune: bool = True) -> str:
        """Save to every store; raise ``CheckpointError`` naming each failure when fewer than
        ``write_quorum`` durable stores acknowledged. Only a committed save prunes, and then
        never the newest committed checkpoint, in any store."""
        failures: builtins.list[str] = []
        acknowledged = 0
        for store in self.stores:
            try:
                store.save(state, prune=False)
            except _STORE_ERRORS as exc:
                logger.warning("checkpoint of round %s not written to %s: %s",
                               state.round, store.location, exc)  # fmt: skip
                failures.append(f"{store.location}: {exc}")
            else:
                acknowledged += store.durable
        if acknowledged < self.write_quorum:
            raise CheckpointError(
                f"checkpoint of round {state.round} reached {acknowledged} of "
                f"{len(self.stores)} stores, below the write quorum of {self.write_quorum}; "
                "failed: " + ("; ".join(failures) or "none (the others are not durable)")
            )
        if prune:
            self._prune(None, protect={state.round}, saved=state.round)
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

    def latest_valid(self, *, reject: Reject | None = None) -> ServerState | None:
        """The newest round whose valid copies (that ``reject`` accepts) are in at least
        ``write_quorum`` durable stores; None when no store holds a checkpoint. A round below
        the quorum is skipped with a warning naming the stores that hold it.

        This reads up to every copy of each round it considers, newest first, a cost paid
        once, at resume."""
        state, problems = self._newest_committed(reject)
        if state is None and problems:
            raise CheckpointError(
                "no committed checkpoint in any store: " + "; ".join(problems) + "; if a store "
                "is lost for good, resume with checkpoint.write_quorum set to the durable "
                "stores that remain"
            )
        return state

    def rounds(self) -> builtins.list[int]:
        return sorted({round_ for found in self._rounds().values() for round_ in found})

    def list(self) -> builtins.list[CheckpointInfo]:
        """One entry per round found in any store, oldest first; ``stores`` names the stores
        holding a valid copy, ``problem`` each damaged copy, ``quorum`` how many count."""
        copies: dict[int, builtins.list[CheckpointInfo]] = defaultdict(builtins.list)
        for store in self.stores:
            try:
                infos = store.list()
            except _STORE_ERRORS as exc:
                logger.warning("cannot list checkpoints in %s: %s", store.location, exc)
                continue
            for info in infos:
                copies[info.round].append(_named(info, store.location))
        return [self._merge(round_, copies[round_]) for round_ in sorted(copies)]

    def prune(self, keep: int | None = None, *, protect: Collection[int] = ()) -> None:
        """Prune every store by ``keep`` (None: each store's own retention), never deleting
        ``protect`` nor the newest committed round; raise naming each store that failed."""
        failures = self._prune(keep, protect=protect, saved=None)
        if failures:
            raise CheckpointError("cannot prune checkpoints: " + "; ".join(failures))

    def _prune(
        self, keep: int | None, *, protect: Collection[int], saved: int | None
    ) -> builtins.list[str]:
        """Prune each member, sparing the newest committed round; a just-saved round that no
        store has anything newer than is that round, found without reading a copy back."""
        newest = max(self.rounds(), default=None)
        if saved is None or (newest is not None and newest > saved):
            committed, _ = self._newest_committed(None)
            protect = {*protect, *([committed.round] if committed else [])}
        failures: builtins.list[str] = []
        for store in self.stores:
            try:
                store.prune(keep, protect=protect)
            except _STORE_ERRORS as exc:
                logger.warning("cannot prune %s: %s", store.location, exc)
                failures.append(f"{store.location}: {exc}")
        return failures

    def _rounds(self) -> dict[CheckpointStore, set[int]]:
        """Each reachable store's rounds, unverified; an unreachable store is logged."""
        found: dict[CheckpointStore, set[int]] = {}
        for store in self.stores:
            try:
                found[store] = set(store.rounds())
            except _STORE_ERRORS as exc:
                logger.warning("cannot list checkpoints in %s: %s", store.location, exc)
        return found

    def _newest_committed(
        self, reject: Reject | None
    ) -> tuple[ServerState | None, builtins.list[str]]:
        """The newest committed round (loaded) and the problems of every newer one."""
        found = self._rounds()
        problems: builtins.list[str] = []
        for round_ in sorted({r for rounds in found.values() for r in rounds}, reverse=True):
            holders = [store for store, rounds in found.items() if round_ in rounds]
            state, counted, why = self._read_round(round_, holders, reject)
            if state is not None and len(counted) >= self.write_quorum:
                return state, problems
            if state is not None:
                why.append(
                    f"round {round_} is valid in {len(counted)} of {len(self.stores)} durable "
                    f"stores ({', '.join(counted) or 'none'}), below the write quorum of "
                    f"{self.write_quorum}: not a commit"
                )
            logger.warning("skipping checkpoint of round %s: %s", round_, "; ".join(why))
            problems.extend(why)
        return None, problems

    def _read_round(
        self, round_: int, holders: builtins.list[CheckpointStore], reject: Reject | None
    ) -> tuple[ServerState | None, builtins.list[str], builtins.list[str]]:
        """(a usable copy, durable stores holding one, problems), reading copies only until
        the quorum is met."""
        state: ServerState | None = None
        counted: builtins.list[str] = []
        problems: builtins.list[str] = []
        for store in holders:
            try:
                copy = store.load(dir_name(round_))
            except _STORE_ERRORS as exc:
                problems.append(f"{store.location}: {exc}")
                continue
            reason = reject(copy) if reject is not None else None
            if reason is not None:
                problems.append(f"{store.location}: round {round_}: {reason}")
                continue
            if state is None:
                state = copy
            counted += [store.location] if store.durable else []
            if len(counted) >= self.write_quorum:
                break
        return state, counted, problems

    def _merge(self, round_: int, copies: builtins.list[CheckpointInfo]) -> CheckpointInfo:
        """One round's copies as one entry: valid if any copy is, committed if W durable
        stores hold a valid copy."""
        good = [info for info in copies if info.valid]
        problems = [info.problem for info in copies if info.problem is not None]
        size = good[0].size_bytes if good else max(info.size_bytes for info in copies)
        holders = tuple(location for info in good for location in info.stores)
        durable = {store.location for store in self.stores if store.durable}
        quorum = Quorum(sum(h in durable for h in holders), self.write_quorum, len(self.stores))
        return CheckpointInfo(dir_name(round_), round_, size, bool(good),
                              "; ".join(problems) or None, holders, quorum)  # fmt: skip


def _named(info: CheckpointInfo, location: str) -> CheckpointInfo:
    """Prefix a copy's problem with its store, so a merged listing says which copy is bad
    (unless it already starts with it, as the local and fsspec stores' messages do)."""
    if info.problem is None or info.problem.startswith(location):
        return info
    return replace(info, problem=f"{location}: {info.problem}")


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
