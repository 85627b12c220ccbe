"""Replies: encoded by the coordinator, parsed by a client."""

from __future__ import annotations

from collections.abc import Iterator

from phalanx.errors import ProtocolError
from phalanx.runtime.grpc.assembly import chunks
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.serde._core import (
    chunk_or_part,
    encoder,
    envelope_of,
    envelope_pb,
    key_of,
    key_pb,
    parse_message,
    ref_of,
    ref_pb,
    require,
    specs_pb,
    task_of,
    task_pb,
    tensor_specs_of,
)
from phalanx.runtime.grpc.serde.chunks import chunk_part
from phalanx.runtime.grpc.session import (
    Ack,
    Chunk,
    CoordinatorStatus,
    HeartbeatReply,
    Lease,
    MemberStatus,
    ModelHeader,
    ModelPayload,
    PullReply,
    PullStatus,
    PushReceipt,
)

_STATUS = {
    PullStatus.TASK: pb.PullTaskReply.TASK,
    PullStatus.NONE_YET: pb.PullTaskReply.NONE_YET,
    PullStatus.FINISHED: pb.PullTaskReply.FINISHED,
}
_STATUS_BACK = {value: key for key, value in _STATUS.items()}


@encoder
def lease_reply(lease: Lease) -> pb.JoinReply:
    return pb.JoinReply(
        envelope=envelope_pb(lease.envelope), client_id=lease.client, session=lease.session,
        heartbeat_interval_s=lease.heartbeat_interval_s, patience_s=lease.patience_s,
    )  # fmt: skip


def parse_lease_reply(data: bytes) -> Lease:
    message = parse_message(pb.JoinReply, data)
    require(message, "envelope")
    return Lease(
        envelope_of(message.envelope, "coordinator"), message.client_id, message.session,
        message.heartbeat_interval_s, message.patience_s,
    )  # fmt: skip


@encoder
def heartbeat_reply(reply: HeartbeatReply) -> pb.HeartbeatReply:
    cancelled = [key_pb(key) for key in reply.cancelled]
    return pb.HeartbeatReply(envelope=envelope_pb(reply.envelope), cancelled=cancelled)


def parse_heartbeat_reply(data: bytes) -> HeartbeatReply:
    message = parse_message(pb.HeartbeatReply, data)
    require(message, "envelope")
    cancelled = tuple(key_of(key) for key in message.cancelled)
    return HeartbeatReply(envelope_of(message.envelope, "coordinator"), cancelled)


@encoder
def pull_reply(reply: PullReply) -> pb.PullTaskReply:
    if (reply.task is None) == (reply.status is PullStatus.TASK):
        raise ValueError(f"a {reply.status} reply carries a task exactly when it is 'task'")
    task = task_pb(reply.task) if reply.task is not None else None
    return pb.PullTaskReply(
        envelope=envelope_pb(reply.envelope), status=_STATUS[reply.status], task=task
    )


def parse_pull_reply(data: bytes) -> PullReply:
    message = parse_message(pb.PullTaskReply, data)
    require(message, "envelope")
    status = _STATUS_BACK.get(message.status)
    if status is None:
        raise ProtocolError(f"pull reply has no known status (got {message.status})")
    if message.HasField("task") != (status is PullStatus.TASK):
        raise ProtocolError(f"a {status} pull reply carries a task exactly when it is 'task'")
    task = task_of(message.task, "coordinator") if message.HasField("task") else None
    return PullReply(envelope_of(message.envelope, "coordinator"), status, task)


def model_parts(payload: ModelPayload, chunk_bytes: int) -> Iterator[bytes]:
    """A model download: its header, then its bytes in chunks."""
    yield _model_header(payload.header)
    for seq, piece in chunks(payload.data, chunk_bytes):
        yield chunk_part(seq, [piece])


@encoder
def _model_header(header: ModelHeader) -> pb.ModelPart:
    part = pb.ModelHeader(
        envelope=envelope_pb(header.envelope), ref=ref_pb(header.ref),
        tensors=specs_pb(header.specs), total_bytes=header.total_bytes,
    )  # fmt: skip
    return pb.ModelPart(header=part)


def parse_model_part(data: bytes) -> ModelHeader | Chunk:
    message = chunk_or_part(pb.ModelPart, data)
    if isinstance(message, Chunk):
        return message
    require(message, "header")
    part = message.header
    require(part, "envelope", "ref")
    envelope = envelope_of(part.envelope, "coordinator")
    return ModelHeader(envelope, ref_of(part.ref), tensor_specs_of(part.tensors), part.total_bytes)


@encoder
def push_reply(receipt: PushReceipt) -> pb.PushUpdateReply:
    return pb.PushUpdateReply(envelope=envelope_pb(receipt.envelope), key=key_pb(receipt.key))


def parse_push_reply(data: bytes) -> PushReceipt:
    message = parse_message(pb.PushUpdateReply, data)
    require(message, "envelope", "key")
    return PushReceipt(envelope_of(message.envelope, "coordinator"), key_of(message.key))


@encoder
def ack_reply(ack: Ack) -> pb.Ack:
    return pb.Ack(envelope=envelope_pb(ack.envelope))


def parse_ack_reply(data: bytes) -> Ack:
    message = parse_message(pb.Ack, data)
    require(message, "envelope")
    return Ack(envelope_of(message.envelope, "coordinator"))


@encoder
def status_reply(status: CoordinatorStatus) -> pb.StatusReply:
    members = [
        pb.MemberStatus(client_id=m.client, live=m.live, heartbeat_age_s=m.heartbeat_age_s)
        for m in status.members
    ]
    return pb.StatusReply(
        envelope=envelope_pb(status.envelope), members=members,
        round_in_flight=status.round_in_flight, rounds_committed=status.rounds_committed,
        rounds_failed=status.rounds_failed,
    )  # fmt: skip


def parse_status_reply(data: bytes) -> CoordinatorStatus:
    message = parse_message(pb.StatusReply, data)
    require(message, "envelope")
    members = tuple(
        MemberStatus(
            m.client_id, m.live, m.heartbeat_age_s if m.HasField("heartbeat_age_s") else None
        )
        for m in message.members
    )
    in_flight = message.round_in_flight if message.HasField("round_in_flight") else None
    return CoordinatorStatus(
        envelope_of(message.envelope, "coordinator"), members, in_flight,
        message.rounds_committed, message.rounds_failed,
    )  # fmt: skip
