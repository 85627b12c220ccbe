"""A scripted coordinator for client tests: a ``CoordinatorHandlers`` served with the real
servicer (``build_server``) on a loopback port, on an event loop of its own thread.

The script is a queue of tasks handed out in order, then FINISHED once ``finish`` is set
and the queue is empty (NONE_YET after a short wait until then). Everything a client does
is recorded (joins, heartbeats, model downloads, admitted pushes, updates, failed pushes,
reports, leaves); a second push of a key already received is refused as a duplicate.
``stop`` and ``start`` again on the same port play a coordinator restart:
the sessions are forgotten, so the next call of an old session is UNAUTHENTICATED.

For failover: ``epoch`` and ``run_id`` go on every reply (tasks carry the epoch given to
``task``); with ``standby`` set, every call is refused with ``NotLeaderError`` naming that
address ("" names none); ``any_session`` accepts a session it never issued (a deposed leader
that still answers); the epoch each request carried is recorded by method (``stamps``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import torch

from phalanx.core.messages import (
    PROTOCOL_VERSION,
    ClientUpdate,
    Envelope,
    ModelRef,
    PartialWork,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.tensors import payload_digest
from phalanx.errors import AuthError, DuplicateError, NotLeaderError, PhalanxError, StaleError
from phalanx.runtime.grpc.assembly import WireLimits, raw_bytes, specs_of
from phalanx.runtime.grpc.servicer import build_server
from phalanx.runtime.grpc.session import (
    Ack,
    Caller,
    HeartbeatReply,
    JoinRequest,
    Lease,
    ModelPayload,
    PullReply,
    PullStatus,
    PushReceipt,
    UpdateHeader,
)

RUN = Envelope(run_id="fake-run")
TOKEN = "secret-token"
LIMITS = WireLimits(max_bytes=16 << 20, max_chunk_bytes=64 << 10, chunk_bytes=16 << 10)
Tensors = dict[str, torch.Tensor]


def task(
    round_index: int,
    client: int,
    ref: ModelRef,
    *,
    attempt: int = 0,
    ttl_s: float = 30.0,
    partial: bool = False,
    epochs: int = 1,
    batch: int = 4,
    epoch: int = 0,
) -> TrainTask:
    config = TaskConfig(epochs, batch, 0.1, ttl_s, partial=PartialWork(partial, 0.1))
    envelope = Envelope(run_id=RUN.run_id, epoch=epoch)
    return TrainTask(envelope, TaskKey(round_index, client, attempt), ref, config)


@dataclass
class FakeCoordinator:
    tasks: deque[TrainTask] = field(default_factory=deque)
    finish: bool = False
    heartbeat_s: float = 0.1
    protocol: int = PROTOCOL_VERSION
    refuse: Callable[[UpdateHeader], PhalanxError | None] = lambda header: None
    cancelled: tuple[TaskKey, ...] = ()
    amnesia: bool = False  # every session is unknown at once (a broken coordinator)
    models: dict[ModelRef, Tensors] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    joins: list[JoinRequest] = field(default_factory=list)
    heartbeats: int = 0
    downloads: list[ModelRef] = field(default_factory=list)
    admitted: list[UpdateHeader] = field(default_factory=list)
    updates: list[ClientUpdate] = field(default_factory=list)
    push_failures: list[str] = field(default_factory=list)
    reports: list[TaskFailure] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    handed: list[TrainTask] = field(default_factory=list)
    epoch: int = 0
    run_id: str = RUN.run_id
    standby: str | None = None  # not leading: NotLeaderError naming this leader ("": none)
    any_session: bool = False
    stamps: list[tuple[str, int]] = field(default_factory=list)  # (method, request epoch)
    forget_on_pull: int = 0  # the next N pulls led find every session forgotten (a restart)
    join_delay_s: float = 0.0  # each join answers this late
    pull_delay_s: float = 0.05  # a pull with no task answers NONE_YET this late
    slow_heartbeats: int = 0  # the next N heartbeats answer ``heartbeat_delay_s`` late
    heartbeat_delay_s: float = 0.0

    @property
    def envelope(self) -> Envelope:
        return Envelope(PROTOCOL_VERSION, self.run_id, self.epoch)

    def publish(self, version: int, tensors: Tensors) -> ModelRef:
        ref = ModelRef(version, payload_digest(tensors))
        self.models[ref] = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
        return ref

    def forget_sessions(self) -> None:
        self.sessions.clear()

    def _lead(self, method: str, envelope: Envelope) -> None:
        self.stamps.append((method, envelope.epoch))
        if self.standby is not None:
            raise NotLeaderError("this coordinator is a standby", leader=self.standby)

    def _check(self, caller: Caller, method: str) -> None:
        self._lead(method, caller.envelope)
        if self.any_session:
            return
        if caller.session not in self.sessions or self.amnesia:
            raise AuthError(f"session {caller.session!r} is not known")

    async def join(self, request: JoinRequest) -> Lease:
        self._lead("join", request.envelope)
        if request.credential != TOKEN:
            raise AuthError(f"client {request.client}: credential not accepted")
        if self.join_delay_s:
            await asyncio.sleep(self.join_delay_s)
        self.joins.append(request)
        session = f"s-{request.client}-{len(self.joins)}"
        self.sessions.add(session)
        envelope = Envelope(self.protocol, self.run_id, self.epoch)
        return Lease(envelope, request.client, session, self.heartbeat_s, 1.0)

    async def heartbeat(self, caller: Caller) -> HeartbeatReply:
        if self.slow_heartbeats > 0:  # before anything is checked: a loaded coordinator
            self.slow_heartbeats -= 1
            await asyncio.sleep(self.heartbeat_delay_s)
        self._check(caller, "heartbeat")
        self.heartbeats += 1
        return HeartbeatReply(self.envelope, self.cancelled)

    async def pull_task(self, caller: Caller) -> PullReply:
        if self.forget_on_pull > 0 and self.standby is None:
            self.forget_on_pull -= 1
            self.forget_sessions()
        self._check(caller, "pull")
        envelope = self.envelope  # before the task is recorded as handed (tests wait on it)
        if self.tasks:
            handed = self.tasks.popleft()
            self.handed.append(handed)
            return PullReply(envelope, PullStatus.TASK, handed)
        if self.finish:
            return PullReply(self.envelope, PullStatus.FINISHED)
        await asyncio.sleep(self.pull_delay_s)
        return PullReply(self.envelope, PullStatus.NONE_YET)

    async def get_model(self, caller: Caller, ref: ModelRef) -> ModelPayload:
        self._check(caller, "model")
        tensors = self.models.get(ref)
        if tensors is None:
            raise StaleError(f"model version {ref.version} is not held")
        self.downloads.append(ref)
        return ModelPayload(self.envelope, ref, specs_of(tensors), raw_bytes(tensors))

    async def admit_update(self, caller: Caller, header: UpdateHeader) -> None:
        self._check(caller, "push")
        self.admitted.append(header)
        if any(update.key == header.key for update in self.updates):  # idempotent by key
            raise DuplicateError(f"update {header.key} was already received")
        refusal = self.refuse(header)
        if refusal is not None:
            raise refusal

    async def push_update(self, caller: Caller, update: ClientUpdate) -> PushReceipt:
        self.updates.append(update)
        return PushReceipt(self.envelope, update.key)

    def push_failed(self, caller: Caller, header: UpdateHeader, reason: str) -> None:
        self.push_failures.append(reason)

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack:
        self._check(caller, "report")
        self.reports.append(failure)
        return Ack(self.envelope)

    async def leave(self, caller: Caller, reason: str) -> Ack:
        self._lead("leave", caller.envelope)
        self.leaves.append(reason)
        return Ack(self.envelope)


class Served:
    """``fake`` served on 127.0.0.1 (an ephemeral port, kept across ``stop``/``start``),
    over TLS when given server credentials."""

    def __init__(
        self, fake: FakeCoordinator, credentials: grpc.ServerCredentials | None = None
    ) -> None:
        self.fake = fake
        self._credentials = credentials
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None
        self._thaw = threading.Event()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        async def start() -> grpc.aio.Server:
            server = build_server(self.fake, LIMITS)
            address = f"127.0.0.1:{self.port}"
            if self._credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, self._credentials)
            await server.start()
            return server

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=10)

    def freeze(self, seconds: float) -> None:
        """Block the server's event loop for ``seconds`` (or until ``close``), as SIGSTOP
        would: connections stay open, nothing is answered."""
        self._loop.call_soon_threadsafe(self._thaw.wait, seconds)

    def stop(self) -> None:
        """Stop serving at once (in-flight calls cancelled), as a killed coordinator."""
        server, self._server = self._server, None
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(grace=None), self._loop).result(10)

    def __enter__(self) -> Served:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._thaw.set()
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
