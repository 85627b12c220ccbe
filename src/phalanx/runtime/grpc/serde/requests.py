"""Requests: encoded by a client, parsed by the coordinator (everything it decodes)."""

from __future__ import annotations

from collections.abc import Iterator

from phalanx.core.messages import ClientUpdate, ModelRef, TaskFailure
from phalanx.runtime.grpc.assembly import chunk_pieces, specs_of, tensor_views
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.serde._core import (
    caller_of,
    caller_pb,
    chunk_or_part,
    encoder,
    envelope_of,
    envelope_pb,
    failure_of,
    failure_pb,
    key_of,
    key_pb,
    parse_message,
    ref_of,
    ref_pb,
    require,
    specs_pb,
    tensor_specs_of,
)
from phalanx.runtime.grpc.serde.chunks import chunk_part
from phalanx.runtime.grpc.session import Caller, Chunk, JoinRequest, StatusQuery, UpdateHeader


@encoder
def join_request(request: JoinRequest) -> pb.JoinRequest:
    return pb.JoinRequest(
        envelope=envelope_pb(request.envelope), client_id=request.client,
        credential=request.credential, num_examples=request.num_examples,
    )  # fmt: skip


def parse_join_request(data: bytes) -> JoinRequest:
    message = parse_message(pb.JoinRequest, data)
    require(message, "envelope")
    envelope = envelope_of(message.envelope, "client")
    return JoinRequest(envelope, message.client_id, message.credential, message.num_examples)


@encoder
def heartbeat_request(caller: Caller) -> pb.HeartbeatRequest:
    return pb.HeartbeatRequest(caller=caller_pb(caller))


def parse_heartbeat_request(data: bytes) -> Caller:
    message = parse_message(pb.HeartbeatRequest, data)
    require(message, "caller")
    return caller_of(message.caller)


@encoder
def pull_request(caller: Caller) -> pb.PullTaskRequest:
    return pb.PullTaskRequest(caller=caller_pb(caller))


def parse_pull_request(data: bytes) -> Caller:
    message = parse_message(pb.PullTaskRequest, data)
    require(message, "caller")
    return caller_of(message.caller)


@encoder
def get_model_request(caller: Caller, ref: ModelRef) -> pb.GetModelRequest:
    return pb.GetModelRequest(caller=caller_pb(caller), ref=ref_pb(ref))


def parse_get_model_request(data: bytes) -> tuple[Caller, ModelRef]:
    message = parse_message(pb.GetModelRequest, data)
    require(message, "caller", "ref")
    return caller_of(message.caller), ref_of(message.ref)


def update_parts(caller: Caller, update: ClientUpdate, chunk_bytes: int) -> Iterator[bytes]:
    """A push: the update's header, then its tensors' bytes in chunks."""
    views = tensor_views(update.tensors)
    yield _update_start(caller, update, sum(len(v) for v in views))
    for seq, pieces in chunk_pieces(views, chunk_bytes):
        yield chunk_part(seq, pieces)


@encoder
def _update_start(caller: Caller, update: ClientUpdate, total: int) -> pb.UpdatePart:
    header = pb.UpdateHeader(
        envelope=envelope_pb(update.envelope), key=key_pb(update.key),
        base=ref_pb(update.base), steps_done=update.steps_done,
        steps_planned=update.steps_planned, num_examples=update.num_examples,
        metrics=update.metrics, tensors=specs_pb(specs_of(update.tensors)),
        digest=update.digest, total_bytes=total,
    )  # fmt: skip
    return pb.UpdatePart(start=pb.UpdateStart(caller=caller_pb(caller), header=header))


def parse_update_part(data: bytes) -> tuple[Caller, UpdateHeader] | Chunk:
    """The first part of a push (who, and the update's header) or one of its chunks."""
    message = chunk_or_part(pb.UpdatePart, data)
    if isinstance(message, Chunk):
        return message
    require(message, "start")
    start = message.start
    require(start, "caller", "header")
    return caller_of(start.caller), _update_header(start.header)


def _update_header(part: pb.UpdateHeader) -> UpdateHeader:
    require(part, "envelope", "key", "base")
    return UpdateHeader(
        envelope=envelope_of(part.envelope, "client"), key=key_of(part.key), base=ref_of(part.base),
        steps_done=part.steps_done, steps_planned=part.steps_planned,
        num_examples=part.num_examples, metrics=dict(part.metrics),
        specs=tensor_specs_of(part.tensors), digest=part.digest, total_bytes=part.total_bytes,
    )  # fmt: skip


@encoder
def report_failure_request(caller: Caller, failure: TaskFailure) -> pb.ReportFailureRequest:
    return pb.ReportFailureRequest(caller=caller_pb(caller), failure=failure_pb(failure))


def parse_report_failure_request(data: bytes) -> tuple[Caller, TaskFailure]:
    message = parse_message(pb.ReportFailureRequest, data)
    require(message, "caller", "failure")
    return caller_of(message.caller), failure_of(message.failure, "client")


@encoder
def leave_request(caller: Caller, reason: str) -> pb.LeaveRequest:
    return pb.LeaveRequest(caller=caller_pb(caller), reason=reason)


def parse_leave_request(data: bytes) -> tuple[Caller, str]:
    message = parse_message(pb.LeaveRequest, data)
    require(message, "caller")
    return caller_of(message.caller), message.reason


@encoder
def status_request(query: StatusQuery) -> pb.StatusRequest:
    return pb.StatusRequest(envelope=envelope_pb(query.envelope), credential=query.credential)


def parse_status_request(data: bytes) -> StatusQuery:
    message = parse_message(pb.StatusRequest, data)
    require(message, "envelope")
    return StatusQuery(envelope_of(message.envelope, "client"), message.credential)
