"""``Gate``: the ``CoordinatorHandlers`` of a coordinator in an HA group.

The gRPC server stays up for the whole life of the process; what answers behind it changes
with the term. While standing by, every client call is ``NotLeaderError`` carrying the
leader's advertised address (or "" when none is known). While leading at epoch E, calls go
to that term's ``CoordinatorService``, after the epoch checks of the wire contract
(docs/failover.md):

- a request whose epoch is above E comes from a client that has seen a newer leader: this
  coordinator was deposed and does not know it yet (``NotLeaderError``);
- an update or failure report answering a task of an epoch below E is ``StaleError``: task
  keys repeat across epochs (the new leader redoes the round in flight), so the key alone
  cannot tell an old answer from a new one.

A long poll that began under a term that has since ended answers ``NotLeaderError`` too,
never the closing term's FINISHED (the run is not over; only this leadership is).
"""

from __future__ import annotations

from phalanx.core.messages import ClientUpdate, ModelRef, TaskFailure
from phalanx.errors import NotLeaderError, StaleError
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.session import (
    Ack,
    Caller,
    CoordinatorStatus,
    HeartbeatReply,
    JoinRequest,
    Lease,
    ModelPayload,
    PullReply,
    PullStatus,
    PushReceipt,
    StatusQuery,
    UpdateHeader,
)


class Gate:
    def __init__(self) -> None:
        self.service: CoordinatorService | None = None
        self.epoch = 0
        self.hint = ""  # the leader's advertised address, as last read from etcd
        self.finished = False  # the group's run is over: pulls may answer FINISHED

    def lead(self, service: CoordinatorService, epoch: int, advertise: str) -> None:
        self.service, self.epoch, self.hint = service, epoch, advertise

    def stand_by(self, hint: str) -> None:
        self.service, self.hint = None, hint

    def _leading(self, request_epoch: int) -> CoordinatorService:
        service = self.service
        if service is None:
            where = f"the leader is {self.hint}" if self.hint else "no leader is known yet"
            raise NotLeaderError(f"this coordinator is a standby; {where}", leader=self.hint)
        if request_epoch > self.epoch:
            raise NotLeaderError(
                f"the request is from epoch {request_epoch}; this coordinator led at epoch "
                f"{self.epoch} and has been deposed",
                leader="",
            )
        return service

    def _task_epoch(self, epoch: int, what: str) -> None:
        if epoch < self.epoch:
            raise StaleError(
                f"{what} answers a task from epoch {epoch}; this coordinator leads at epoch "
                f"{self.epoch}"
            )

    async def join(self, request: JoinRequest) -> Lease:
        return await self._leading(request.envelope.epoch).join(request)

    async def heartbeat(self, caller: Caller) -> HeartbeatReply:
        return await self._leading(caller.envelope.epoch).heartbeat(caller)

    async def pull_task(self, caller: Caller) -> PullReply:
        service = self._leading(caller.envelope.epoch)
        reply = await service.pull_task(caller)
        if self.service is not service or (
            reply.status is PullStatus.FINISHED and not self.finished
        ):
            raise NotLeaderError("this coordinator's leadership ended", leader=self.hint)
        return reply

    async def get_model(self, caller: Caller, ref: ModelRef) -> ModelPayload:
        return await self._leading(caller.envelope.epoch).get_model(caller, ref)

    async def admit_update(self, caller: Caller, header: UpdateHeader) -> None:
        service = self._leading(caller.envelope.epoch)
        self._task_epoch(header.envelope.epoch, "the update")
        await service.admit_update(caller, header)

    async def push_update(self, caller: Caller, update: ClientUpdate) -> PushReceipt:
        service = self._leading(caller.envelope.epoch)
        self._task_epoch(update.envelope.epoch, "the update")
        return await service.push_update(caller, update)

    def push_failed(self, caller: Caller, header: UpdateHeader, reason: str) -> None:
        if self.service is not None:
            self.service.push_failed(caller, header, reason)

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack:
        service = self._leading(caller.envelope.epoch)
        self._task_epoch(failure.envelope.epoch, "the failure report")
        return await service.report_failure(caller, failure)

    async def leave(self, caller: Caller, reason: str) -> Ack:
        return await self._leading(caller.envelope.epoch).leave(caller, reason)

    async def status(self, query: StatusQuery) -> CoordinatorStatus:
        return await self._leading(0).status(query)
