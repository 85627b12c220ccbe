"""Fake coordinator handlers that authenticate as a real coordinator must: joins checked
against a credential book, every later call against the session the join issued, calls
charged to a per-client limiter, and pushes refused when their task key was already received.
No engine behind them: the security tests aim at the servicer and the wire."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskFailure, TaskKey
from phalanx.errors import AuthError, DuplicateError, StaleError
from phalanx.runtime.grpc.credentials import NOT_ACCEPTED, CredentialBook
from phalanx.runtime.grpc.limits import ClientLimiter
from phalanx.runtime.grpc.session import (
    Ack,
    Caller,
    CoordinatorStatus,
    HeartbeatReply,
    JoinRequest,
    Lease,
    MemberStatus,
    ModelPayload,
    PullReply,
    PullStatus,
    PushReceipt,
    StatusQuery,
    UpdateHeader,
)

ENVELOPE = Envelope(run_id="secured")
OPERATOR = "operator-token"


@dataclass
class SecuredHandlers:
    book: CredentialBook
    limiter: ClientLimiter = field(default_factory=lambda: ClientLimiter(1000.0, 1000))
    sessions: dict[int, str] = field(default_factory=dict)
    received: set[TaskKey] = field(default_factory=set)
    updates: list[ClientUpdate] = field(default_factory=list)
    reached: list[str] = field(default_factory=list)  # handler work done past authentication

    def _check(self, caller: Caller) -> None:
        expected = self.sessions.get(caller.client, "")
        if not (secrets.compare_digest(expected, caller.session) and expected):
            raise AuthError(f"client {caller.client}: {NOT_ACCEPTED}")
        self.limiter.charge(caller.client)

    async def join(self, request: JoinRequest) -> Lease:
        self.book.verify(request.client, request.credential)
        session = self.sessions[request.client] = secrets.token_hex(16)
        return Lease(ENVELOPE, request.client, session, 0.5, 2.0)

    async def heartbeat(self, caller: Caller) -> HeartbeatReply:
        self._check(caller)
        self.reached.append("heartbeat")
        return HeartbeatReply(ENVELOPE)

    async def pull_task(self, caller: Caller) -> PullReply:
        self._check(caller)
        self.reached.append("pull")
        return PullReply(ENVELOPE, PullStatus.NONE_YET)

    async def get_model(self, caller: Caller, ref: ModelRef) -> ModelPayload:
        self._check(caller)
        self.reached.append("model")
        raise StaleError(f"model version {ref.version} is not held")

    async def admit_update(self, caller: Caller, header: UpdateHeader) -> None:
        self._check(caller)
        if header.key.client != caller.client:
            raise AuthError(f"client {caller.client}: {NOT_ACCEPTED}")
        self.limiter.charge(caller.client, header.total_bytes)
        if header.key in self.received:
            raise DuplicateError(f"task {header.key} was already received")
        self.received.add(header.key)  # reserved: a second stream for it is a duplicate
        self.reached.append("admit")

    async def push_update(self, caller: Caller, update: ClientUpdate) -> PushReceipt:
        self.updates.append(update)
        return PushReceipt(ENVELOPE, update.key)

    def push_failed(self, caller: Caller, header: UpdateHeader, reason: str) -> None:
        self.received.discard(header.key)

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack:
        self._check(caller)
        self.reached.append("report")
        return Ack(ENVELOPE)

    async def leave(self, caller: Caller, reason: str) -> Ack:
        self._check(caller)
        self.reached.append("leave")
        return Ack(ENVELOPE)

    async def status(self, query: StatusQuery) -> CoordinatorStatus:
        if not secrets.compare_digest(query.credential, OPERATOR):
            raise AuthError(f"operator: {NOT_ACCEPTED}")
        members = tuple(
            MemberStatus(client, client in self.sessions, 0.25 if client in self.sessions else None)
            for client in sorted(self.book.clients)
        )
        return CoordinatorStatus(ENVELOPE, members, 7, 6, 1)
