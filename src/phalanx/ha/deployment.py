"""``HaDeployment``: one coordinator of an HA group, from standby to leader and back, until
the group's run is finished.

::

    listen      the gRPC server opens once and stays up; behind it the ``Gate`` answers
                NotLeaderError (with the leader's address) while standing by
    stand by    read the committed pointer (finished: stop, exit 0) and the leader key (the
                hint); when no one leads, campaign (``Elector.try_acquire``)
    lead        a term at epoch E: load the checkpoint the pointer names (verified), a fresh
                gRPC runtime, service and engine stamping E, rounds committed through
                ``FencedCommit`` into this epoch's stores; the lease renewed meanwhile.
                The term ends when the run is finished (farewell, resign, stop) or when the
                lease is lost or a commit is refused (the round in flight is abandoned;
                stand by again)

Each coordinator keeps its own run directory (config, history.jsonl, commits.jsonl); the
group shares the run id (``/PREFIX/run_id``, set by whoever comes first), the checkpoint
stores (``checkpoint.stores``) and the pointer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from phalanx.config import RunConfig
from phalanx.coordinator import HistoryLog, RunDirectory, RunLifecycle
from phalanx.coordinator.digest import config_digest
from phalanx.coordinator.store_calls import StoreCalls
from phalanx.core.models import ModelBook
from phalanx.core.state import ServerState
from phalanx.engine.engine import Engine, RoundHook
from phalanx.engine.offload import Offloader
from phalanx.errors import ConfigError
from phalanx.ha.commit import FencedCommit, LeadershipLostError
from phalanx.ha.commitlog import FILE as COMMITS_FILE
from phalanx.ha.commitlog import CommitLog
from phalanx.ha.election import Elector, HaSettings, Term
from phalanx.ha.etcd import Etcd, EtcdUnavailableError, compare, put_op
from phalanx.ha.gate import Gate
from phalanx.ha.history import TermHistory
from phalanx.ha.pointer import Pointer, epoch_locations, load_committed, model_digest, open_stores
from phalanx.runtime.grpc.coordinator.deployment import FAREWELL_S, Endpoint, Guard, ServedModel
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.coordinator.server import start_serving
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.coordinator.settings import ServeSettings
from phalanx.runtime.grpc.metrics import set_serving
from phalanx.runtime.grpc.servicer import build_server

log = logging.getLogger("phalanx.ha")
WARN_EVERY_S = 5.0
T = TypeVar("T")


@dataclass
class HaResult:
    """How a coordinator's part in the group ended: the pointer it last read (None: the
    run never committed anything it saw), the terms it led, its port."""

    pointer: Pointer | None
    terms: int
    port: int
    directory: Path


class HaDeployment:
    def __init__(
        self, config: RunConfig, model: ServedModel, *, settings: ServeSettings, guard: Guard,
        ha: HaSettings,
    ) -> None:  # fmt: skip
        if not config.checkpoint.stores:
            raise ConfigError(
                "--ha needs checkpoint stores every coordinator of the group can read, e.g. "
                "--set 'checkpoint.stores=[\"/shared/phalanx-store\"]'"
            )
        self.config = config.model_copy(
            update={"checkpoint": config.checkpoint.resolved(Path.cwd())}
        )
        self.model = model
        self.settings = settings
        self.guard = guard
        self.ha = ha
        self.etcd = Etcd(ha.target.endpoints, timeout_s=ha.timeout)
        self.elector = Elector(self.etcd, ha)
        self.pointer_key = ha.target.key("committed")
        self.gate = Gate()
        self.terms = 0

    async def run(
        self, directory: RunDirectory, endpoint: Endpoint, *,
        observers: Sequence[RoundHook] = (), on_listening: Callable[[int], None] | None = None,
    ) -> HaResult:  # fmt: skip
        directory.acquire()
        try:
            directory.run_id = await self._etcd(self._claim_run_id, directory.run_id)
            directory.begin(self.config, resumed_at=None)
            return await self._serve(directory, endpoint, observers, on_listening)
        finally:
            directory.release()

    async def _serve(
        self, directory: RunDirectory, endpoint: Endpoint, observers: Sequence[RoundHook],
        on_listening: Callable[[int], None] | None,
    ) -> HaResult:  # fmt: skip
        server = build_server(self.gate, self.settings.limits)
        port, health = await start_serving(
            server, endpoint.address, endpoint.credentials, endpoint.port_file
        )
        if on_listening is not None:
            on_listening(port)
        history = TermHistory(directory.history)
        commits = CommitLog(directory.path / COMMITS_FILE, coordinator=self.ha.advertise)
        term_parts = _TermParts(directory.run_id, history, commits, observers)
        try:
            for _ in range(1_000_000):  # terms; each ends in a stand-by or the run's end
                term = await self._stand_by()
                if term is None or await self._lead(term, term_parts):
                    break
            return HaResult(self._read_pointer_or_none(), self.terms, port, directory.path)
        finally:
            await set_serving(health, False)
            await server.stop(grace=FAREWELL_S / 2)
            history.close()
            term_parts.offload.close()

    # -- standing by ----------------------------------------------------------------------

    async def _stand_by(self) -> Term | None:
        """Wait for the chance to lead: the new term, or None once the run is finished."""
        warned = 0.0
        for _ in range(100_000_000):  # bounded by the run's end or a stop signal
            try:
                pointer = await self._etcd(self._read_pointer)
                if pointer is not None and pointer.finished:
                    self.gate.finished = True
                    log.info(
                        "the run is finished (round %d, epoch %d)", pointer.round, pointer.epoch
                    )
                    return None
                leader = await self._etcd(self.elector.leader)
                self.gate.stand_by(leader.address if leader else "")
                if leader is None:
                    term = await self._etcd(self.elector.try_acquire)
                    if term is not None:
                        return term
            except EtcdUnavailableError as exc:
                if time.monotonic() - warned > WARN_EVERY_S:
                    warned = time.monotonic()
                    log.warning("standing by; etcd unreachable: %s", exc)
            await asyncio.sleep(self.ha.poll_s)
        return None

    # -- leading --------------------------------------------------------------------------

    async def _lead(self, term: Term, parts: _TermParts) -> bool:
        """Lead one term; True when the run is finished."""
        self.terms += 1
        log.warning("leading at epoch %d (%s)", term.epoch, self.ha.advertise)
        keeper = asyncio.create_task(term.keep())
        leader = _Leadership(self, term, parts)
        try:
            return await leader.run()
        except LeadershipLostError as exc:
            log.warning("standing by after epoch %d: %s", term.epoch, exc)
            return False
        finally:
            self.gate.stand_by("")
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await leader.close()
            if not term.lost.is_set():
                with contextlib.suppress(EtcdUnavailableError):
                    await self._etcd(self.elector.resign, term)

    # -- etcd -----------------------------------------------------------------------------

    async def _etcd(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(fn, *args)

    def _claim_run_id(self, mine: str) -> str:
        """The group's run id: ours if we are first, else the one already there (retried
        while etcd is unreachable, up to a minute)."""
        key = self.ha.target.key("run_id")
        end = time.monotonic() + 60.0
        while True:
            try:
                self.etcd.txn([compare(key, "CREATE", 0)], [put_op(key, mine.encode())])
                found = self.etcd.get(key)
                return found.value.decode() if found is not None else mine
            except EtcdUnavailableError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)

    def _read_pointer(self) -> Pointer | None:
        kv = self.etcd.get(self.pointer_key)
        return None if kv is None else Pointer.decode(kv.value)

    def _read_pointer_or_none(self) -> Pointer | None:
        try:
            return self._read_pointer()
        except EtcdUnavailableError:
            return None


class _TermParts:
    """What outlives a term: the run id, history and commit logs, observers, threads."""

    def __init__(
        self, run_id: str, history: HistoryLog, commits: CommitLog, observers: Sequence[RoundHook]
    ) -> None:
        self.run_id = run_id
        self.history = history
        self.commits = commits
        self.observers = tuple(observers)
        self.offload = Offloader()


class _Leadership:
    """One term's runtime, service, engine and fenced lifecycle."""

    def __init__(self, owner: HaDeployment, term: Term, parts: _TermParts) -> None:
        self.owner = owner
        self.term = term
        self.parts = parts
        config = owner.config
        self.models = ModelBook(owner.model.manifest)
        self.runtime = GrpcRuntime(
            models=self.models, settings=owner.settings, run_id=parts.run_id, epoch=term.epoch
        )
        self.engine = Engine(
            config, self.runtime, membership=self.runtime.membership,
            evaluate=owner.model.evaluate, models=self.models, run_id=parts.run_id,
            offload=parts.offload, epoch=term.epoch,
        )  # fmt: skip
        locations = epoch_locations(config.checkpoint.stores, term.epoch)
        self.store = open_stores(
            locations, write_quorum=config.checkpoint.write_quorum, keep=config.checkpoint.keep
        )
        self.locations = locations
        self.calls = StoreCalls(config.checkpoint.timeout_s, offload=parts.offload)
        self.acquired = False

    async def run(self) -> bool:
        owner, term, parts = self.owner, self.term, self.parts
        digest = config_digest(owner.config)
        previous = await owner._etcd(owner._read_pointer)
        if previous is not None and previous.finished:
            owner.gate.finished = True
            return True
        if previous is not None:
            state = await asyncio.to_thread(load_committed, previous, config_digest=digest)
        else:
            state = self.engine.initial_state(owner.model.params, owner.model.manifest)
            state = state.with_changes(config_digest=digest, last_record=None)
        start_digest = model_digest(state.params)
        parts.commits.write(
            "takeover", epoch=term.epoch, round=state.round, model_digest=start_digest,
            pointer_epoch=previous.epoch if previous else 0,
            base_digest=previous.base_digest if previous else "",
        )  # fmt: skip
        await self.calls.run(self.store.acquire, what=f"taking {self.store.location}")
        self.acquired = True
        parts.history.start(state.round, state.last_record)
        commit = FencedCommit(
            term=term, store=self.store, history=parts.history, commits=parts.commits,
            calls=self.calls, previous=previous, last_round=owner.config.rounds,
            base=Pointer(
                run_id=parts.run_id, round=state.round, model_version=state.model_version,
                model_digest=start_digest, base_digest=start_digest, epoch=term.epoch,
                checkpoint="", stores=self.locations, config_digest=digest, finished=False,
            ),
        )  # fmt: skip
        lifecycle = RunLifecycle(
            owner.config, store=None, history=parts.history, commit=commit,
            observers=[self.runtime.progress.observe, *parts.observers], offload=parts.offload,
        )  # fmt: skip
        self.runtime.progress.at(state)
        service = CoordinatorService(
            self.runtime, owner.guard.authenticator, limiter=owner.guard.limiter,
            operator=owner.guard.operator,
        )  # fmt: skip
        owner.gate.lead(service, term.epoch, owner.ha.advertise)
        return await self._rounds(lifecycle, state)

    async def _rounds(self, lifecycle: RunLifecycle, state: ServerState) -> bool:
        rounds = asyncio.create_task(lifecycle.run(self.engine.run_round, state))
        lost = asyncio.create_task(self.term.lost.wait())
        try:
            await asyncio.wait({rounds, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not rounds.done():
                rounds.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeadershipLostError):
                    await rounds
        if rounds.cancelled() or self.term.lost.is_set():
            raise LeadershipLostError(self.term.why or "the lease was lost")
        rounds.result()  # LeadershipLostError from a refused commit, or a real failure
        self.owner.gate.finished = True
        await self._farewell()
        return True

    async def _farewell(self) -> None:
        runtime = self.runtime
        runtime.board.finish()
        end = time.monotonic() + FAREWELL_S
        while runtime.membership.live_count() and time.monotonic() < end:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.runtime.close(timeout_s=FAREWELL_S)
        self.parts.history.close()
        if self.acquired:
            self.calls.when_idle(self.store.release)
