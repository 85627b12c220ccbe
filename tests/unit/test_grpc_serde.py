"""serde: every phalanx.v1 message survives protobuf bytes and back, and anything else is a
ProtocolError naming the problem (another protocol version names both versions).

Round trips are property tests over the same generated core messages as the codec's tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.test_client import BLOCKER
from tests.unit.test_codec import envelopes, failures, ints, keys, refs, same_update, tasks, text
from tests.unit.test_codec import updates as codec_updates

from phalanx.core.messages import PROTOCOL_VERSION, ClientUpdate, Envelope, ModelRef, TaskKey
from phalanx.core.tensors import payload_digest
from phalanx.errors import ProtocolError, VersionMismatchError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits, raw_bytes, specs_of
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.session import (
    Ack,
    Caller,
    Chunk,
    HeartbeatReply,
    JoinRequest,
    Lease,
    ModelHeader,
    ModelPayload,
    PullReply,
    PullStatus,
    PushReceipt,
)
from phalanx.runtime.grpc.streams import ModelReceiver, UpdateReceiver

callers = st.builds(Caller, envelopes, ints, text)
finite = st.floats(allow_nan=False, allow_infinity=False)
LIMITS = WireLimits(max_bytes=1 << 20, max_chunk_bytes=64, chunk_bytes=16)


@given(st.builds(JoinRequest, envelopes, ints, text, ints))
def test_a_join_request_round_trips(request: JoinRequest) -> None:
    assert serde.parse_join_request(serde.join_request(request)) == request


@given(st.builds(Lease, envelopes, ints, text, finite, finite))
def test_a_lease_round_trips(lease: Lease) -> None:
    assert serde.parse_lease_reply(serde.lease_reply(lease)) == lease


@given(callers)
def test_a_caller_round_trips_in_heartbeat_and_pull(caller: Caller) -> None:
    assert serde.parse_heartbeat_request(serde.heartbeat_request(caller)) == caller
    assert serde.parse_pull_request(serde.pull_request(caller)) == caller


@given(st.builds(HeartbeatReply, envelopes, st.lists(keys, max_size=4).map(tuple)))
def test_a_heartbeat_reply_round_trips(reply: HeartbeatReply) -> None:
    assert serde.parse_heartbeat_reply(serde.heartbeat_reply(reply)) == reply


@given(envelopes, tasks)
def test_a_task_round_trips_in_a_pull_reply(envelope: Envelope, task: object) -> None:
    reply = PullReply(envelope, PullStatus.TASK, task)  # type: ignore[arg-type]
    assert serde.parse_pull_reply(serde.pull_reply(reply)) == reply


@pytest.mark.parametrize("status", [PullStatus.NONE_YET, PullStatus.FINISHED])
def test_a_pull_reply_without_a_task_round_trips(status: PullStatus) -> None:
    reply = PullReply(Envelope(run_id="r"), status)
    assert serde.parse_pull_reply(serde.pull_reply(reply)) == reply


@given(callers, failures)
def test_a_failure_report_round_trips(caller: Caller, failure: object) -> None:
    data = serde.report_failure_request(caller, failure)  # type: ignore[arg-type]
    assert serde.parse_report_failure_request(data) == (caller, failure)


@given(callers, refs, text)
def test_model_requests_leaves_and_acks_round_trip(caller: Caller, ref: ModelRef, why: str) -> None:
    assert serde.parse_get_model_request(serde.get_model_request(caller, ref)) == (caller, ref)
    assert serde.parse_leave_request(serde.leave_request(caller, why)) == (caller, why)
    assert serde.parse_ack_reply(serde.ack_reply(Ack(caller.envelope))) == Ack(caller.envelope)
    receipt = PushReceipt(caller.envelope, TaskKey(1, 2, 3))
    assert serde.parse_push_reply(serde.push_reply(receipt)) == receipt


def push(update: ClientUpdate, caller: Caller, limits: WireLimits = LIMITS) -> ClientUpdate:
    receiver = UpdateReceiver(limits)
    first, *rest = serde.update_parts(caller, update, limits.chunk_bytes)
    assert receiver.start(first) == (caller, receiver._header)
    for data in rest:
        receiver.add(data)
    return receiver.finish(caller.client)


@given(codec_updates(), callers)
@settings(max_examples=40, deadline=None)
def test_an_update_round_trips_through_chunks_with_the_transport_as_sender(
    update: ClientUpdate, caller: Caller
) -> None:
    received = push(update, caller)
    assert same_update(received, replace(update, sender=caller.client))
    assert payload_digest(received.tensors) == update.digest


@given(codec_updates())
@settings(max_examples=30, deadline=None)
def test_a_model_round_trips_through_chunks_checked_against_its_sha256(
    update: ClientUpdate,
) -> None:
    ref = ModelRef(3, payload_digest(update.tensors))
    payload = ModelPayload(Envelope(), ref, specs_of(update.tensors), raw_bytes(update.tensors))
    receiver = ModelReceiver(ref, LIMITS)
    for data in serde.model_parts(payload, LIMITS.chunk_bytes):
        receiver.add(data)
    got = receiver.finish()
    assert list(got) == list(update.tensors)
    assert all(torch.equal(got[n], update.tensors[n]) for n in got)


def test_a_model_that_is_not_the_one_asked_for_is_refused() -> None:
    tensors = {"w": torch.ones(3)}
    ref = ModelRef(2, payload_digest(tensors))
    header = ModelHeader(Envelope(), ModelRef(1, ref.sha256), specs_of(tensors), 12)
    payload = ModelPayload(header.envelope, header.ref, header.specs, raw_bytes(tensors))
    with pytest.raises(ProtocolError, match="asked for model version 2, got version 1"):
        ModelReceiver(ref, LIMITS).add(next(serde.model_parts(payload, 16)))
    damaged = ModelPayload(Envelope(), ref, specs_of(tensors), raw_bytes({"w": torch.zeros(3)}))
    receiver = ModelReceiver(ref, LIMITS)
    for data in serde.model_parts(damaged, 16):
        receiver.add(data)
    with pytest.raises(ProtocolError, match="do not match their digest"):
        receiver.finish()


def test_another_protocol_version_is_refused_naming_both() -> None:
    request = JoinRequest(Envelope(protocol=PROTOCOL_VERSION + 1), 1, "t", 10)
    with pytest.raises(VersionMismatchError) as info:
        serde.parse_join_request(serde.join_request(request))
    assert f"version {PROTOCOL_VERSION + 1}" in str(info.value)
    assert f"version {PROTOCOL_VERSION}" in str(info.value)
    lease = Lease(Envelope(protocol=0), 1, "s", 0.5, 2.0)
    with pytest.raises(VersionMismatchError, match="the coordinator speaks protocol version 0"):
        serde.parse_lease_reply(serde.lease_reply(lease))


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (serde.parse_join_request, b"\xff\xff", "not a phalanx.v1.JoinRequest"),
        (serde.parse_join_request, b"", "JoinRequest has no envelope"),
        (serde.parse_heartbeat_request, pb.HeartbeatRequest(caller=pb.Caller()), "no envelope"),
        (serde.parse_get_model_request, pb.GetModelRequest(), "has no caller"),
        (serde.parse_update_part, pb.UpdatePart(), "UpdatePart has no start"),
        (serde.parse_pull_reply, pb.PullTaskReply(envelope=pb.Envelope(protocol=1)), "status"),
        (
            serde.parse_pull_reply,
            pb.PullTaskReply(envelope=pb.Envelope(protocol=1), status=pb.PullTaskReply.TASK),
            "a task pull reply carries a task exactly when",
        ),
        (
            serde.parse_report_failure_request,
            pb.ReportFailureRequest(
                caller=pb.Caller(envelope=pb.Envelope(protocol=1)),
                failure=pb.TaskFailure(
                    envelope=pb.Envelope(protocol=1), key=pb.TaskKey(), kind="melted"
                ),
            ),
            "unknown failure kind 'melted'",
        ),
    ],
)
def test_malformed_messages_are_protocol_errors_naming_the_problem(
    parse: object, data: bytes | pb.Message, message: str
) -> None:
    raw = data if isinstance(data, bytes) else data.SerializeToString()
    with pytest.raises(ProtocolError, match=message):
        parse(raw)  # type: ignore[operator]


def test_values_protobuf_cannot_hold_are_protocol_errors_when_encoding() -> None:
    with pytest.raises(ProtocolError, match="cannot encode join_request"):
        serde.join_request(JoinRequest(Envelope(), 2**70, "t", 1))
    update = ClientUpdate(
        Envelope(), TaskKey(0, 0, 0), ModelRef(0, ""), 1, 1, 1,
        {"w": torch.ones(2, dtype=torch.float64)}, "",
    )  # fmt: skip
    with pytest.raises(ProtocolError, match="the wire carries float32"):
        list(serde.update_parts(Caller(Envelope(), 0, ""), update, 16))


def test_every_method_has_a_path_and_an_unknown_one_is_named() -> None:
    assert serde.method_path("PushUpdate") == "/phalanx.v1.Coordinator/PushUpdate"
    with pytest.raises(ValueError, match="no method 'Push'"):
        serde.method_path("Push")


def test_a_stream_must_start_with_its_header_and_carry_one() -> None:
    tensors = {"w": torch.ones(8)}
    update = ClientUpdate(
        Envelope(), TaskKey(0, 1, 0), ModelRef(0, ""), 1, 1, 1, tensors, payload_digest(tensors)
    )
    caller = Caller(Envelope(), 1, "s")
    first, *rest = serde.update_parts(caller, update, 16)
    with pytest.raises(ProtocolError, match="must start with its header, not chunk 0"):
        UpdateReceiver(LIMITS).start(rest[0])
    receiver = UpdateReceiver(LIMITS)
    receiver.start(first)
    with pytest.raises(ProtocolError, match="carries one header"):
        receiver.add(first)
    assert isinstance(serde.parse_update_part(rest[0]), Chunk)


def test_the_protocol_needs_no_server_or_dev_dependencies() -> None:
    """A client node speaks phalanx.v1 with the base dependencies alone (grpcio, protobuf):
    no scikit-learn, matplotlib, scipy, fsspec, grpcio-health-checking or grpcio-tools."""
    blocker = BLOCKER.replace('"fsspec"}', '"fsspec", "grpc_health", "grpc_tools"}')
    job = (
        "from phalanx.runtime.grpc import errors, serde, servicer, streams\n"
        "print(len(serde.METHODS))\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", blocker + job], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"
