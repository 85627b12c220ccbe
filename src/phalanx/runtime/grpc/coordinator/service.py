"""``CoordinatorService``: what the coordinator answers to each ``phalanx.v1`` call.

Every call but a join must name the session its client was issued at join (``Sessions``),
and may speak only for that client: a push or failure report for another client's task is
``PermissionDeniedError``. A push is admitted on its header alone: a reply that is
duplicate, stale (another round, another model version, another run), late (past its
time-to-live) or no longer wanted is refused with the reason before a tensor byte is
buffered, and one beyond the upload slots is ``BusyError``. ``status`` answers an operator
(with the operator token, when one is set). Refusals and bytes feed the coordinator's
metrics, when it keeps them. The service decides nothing
about rounds: it hands what arrives to the runtime's queue, and the engine decides.
"""

from __future__ import annotations

from phalanx.core.messages import PROTOCOL_VERSION, ClientUpdate, ModelRef, TaskFailure
from phalanx.errors import (
    BusyError,
    DuplicateError,
    PermissionDeniedError,
    PhalanxError,
    ProtocolError,
    StaleError,
    VersionMismatchError,
)
from phalanx.runtime.grpc.assembly import ITEMSIZE
from phalanx.runtime.grpc.coordinator.access import (
    Authenticator,
    Limiter,
    OperatorToken,
    Sessions,
)
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.handlers import model_payload
from phalanx.runtime.grpc.metrics import CoordinatorMetrics
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
from phalanx.types import ClientId

REJECTIONS: dict[type[PhalanxError], str] = {
    StaleError: "stale",
    DuplicateError: "duplicate",
    BusyError: "busy",
    PermissionDeniedError: "not_own_task",
}
"""The metrics' reason label of a push refused at admission (late: its own label)."""


class CoordinatorService:
    """The ``CoordinatorHandlers`` of a coordinator whose transport is ``runtime``."""

    def __init__(
        self, runtime: GrpcRuntime, authenticator: Authenticator, *,
        limiter: Limiter | None = None, metrics: CoordinatorMetrics | None = None,
        operator: OperatorToken | None = None,
    ) -> None:  # fmt: skip
        self._runtime = runtime
        self._auth = authenticator
        self._limiter = limiter
        self._metrics = metrics
        self._operator = operator or OperatorToken(None)
        self.sessions = Sessions()

    async def join(self, request: JoinRequest) -> Lease:
        _same_protocol(request.envelope.protocol, f"client {request.client}")
        self._auth.verify(request.client, request.credential)
        if request.num_examples < 1:
            raise ProtocolError(
                f"client {request.client} declares {request.num_examples} examples; at least 1"
            )
        self._charge(request.client, 0)
        session = self.sessions.issue(request.client)
        self._runtime.joined(request.client, request.num_examples)
        settings = self._runtime.settings
        return Lease(
            self._runtime.envelope, request.client, session,
            heartbeat_interval_s=settings.heartbeat_s, patience_s=settings.patience_s,
        )  # fmt: skip

    async def heartbeat(self, caller: Caller) -> HeartbeatReply:
        client = self._admit(caller)
        return HeartbeatReply(self._runtime.envelope, self._runtime.board.told(client))

    async def pull_task(self, caller: Caller) -> PullReply:
        client = self._admit(caller)
        self._charge(client, 0)
        board = self._runtime.board
        with self._runtime.liveness.polling(client):
            task = await board.take(client, self._runtime.settings.pull_wait_s)
        envelope = self._runtime.envelope
        if task is not None:
            return PullReply(envelope, PullStatus.TASK, task)
        return PullReply(envelope, PullStatus.FINISHED if board.finished else PullStatus.NONE_YET)

    async def get_model(self, caller: Caller, ref: ModelRef) -> ModelPayload:
        client = self._admit(caller)
        payload = model_payload(self._runtime.models, ref, self._runtime.envelope)
        nbytes = memoryview(payload.data).nbytes
        self._charge(client, nbytes)
        if self._metrics is not None:
            self._metrics.bytes_out(nbytes)
        return payload

    async def admit_update(self, caller: Caller, header: UpdateHeader) -> None:
        client = self._admit(caller)
        try:
            _own(client, header.key.client, "push an update")
            self._runtime.board.check_reply(header.key, header.base, header.envelope.run_id)
            self._runtime.uploads.take(header.key)
        except PhalanxError as error:
            self._rejected(error)
            raise
        try:
            self._charge(client, header.total_bytes)
        except Exception:
            self._runtime.uploads.release(header.key)
            raise

    async def push_update(self, caller: Caller, update: ClientUpdate) -> PushReceipt:
        if self._metrics is not None:
            self._metrics.bytes_in(sum(t.numel() for t in update.tensors.values()) * ITEMSIZE)
        if not self._runtime.received(update):
            raise StaleError(
                f"task (round {update.key.round}, client {update.key.client}, attempt "
                f"{update.key.attempt}) was cancelled or failed while its update streamed"
            )
        return PushReceipt(self._runtime.envelope, update.key)

    def push_failed(self, caller: Caller, header: UpdateHeader, reason: str) -> None:
        self._runtime.uploads.release(header.key)

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack:
        client = self._admit(caller)
        _own(client, failure.key.client, "report a failure")
        detail = f"the client reported: {failure.detail}" if failure.detail else failure.detail
        self._runtime.reported(TaskFailure(failure.key, failure.kind, detail, failure.envelope))
        return Ack(self._runtime.envelope)

    async def leave(self, caller: Caller, reason: str) -> Ack:
        client = self._admit(caller)
        self.sessions.revoke(client)
        self._runtime.left(client)
        return Ack(self._runtime.envelope)

    async def status(self, query: StatusQuery) -> CoordinatorStatus:
        self._operator.check(query.credential)
        runtime = self._runtime
        members = tuple(
            MemberStatus(client, runtime.membership.is_live(client), runtime.liveness.age(client))
            for client in sorted(runtime.membership.registered())
        )
        progress = runtime.progress
        return CoordinatorStatus(
            runtime.envelope, members, progress.round_in_flight, progress.committed,
            progress.failed,
        )  # fmt: skip

    def _rejected(self, error: PhalanxError) -> None:
        if self._metrics is not None:
            reason = REJECTIONS.get(type(error), type(error).__name__)
            self._metrics.update_rejected("late" if "late by" in str(error) else reason)

    def _admit(self, caller: Caller) -> ClientId:
        """The caller's client, once its protocol and session are checked; a sign of life."""
        _same_protocol(caller.envelope.protocol, f"client {caller.client}")
        self.sessions.check(caller)
        self._runtime.seen(caller.client)
        return caller.client

    def _charge(self, client: ClientId, nbytes: int) -> None:
        if self._limiter is not None:
            self._limiter.charge(client, nbytes)


def _same_protocol(version: int, who: str) -> None:
    if version != PROTOCOL_VERSION:
        raise VersionMismatchError(
            f"{who} speaks protocol version {version}; this coordinator speaks version "
            f"{PROTOCOL_VERSION}"
        )


def _own(caller: ClientId, owner: ClientId, what: str) -> None:
    if caller != owner:
        raise PermissionDeniedError(
            f"client {caller} may not {what} for client {owner}'s task: a client acts only "
            "as itself"
        )
