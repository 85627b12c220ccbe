"""Every ``phalanx.v1`` message to protobuf bytes and back: the only package that touches
the generated code (``proto/phalanx_v1_pb2``).

Each call's request and reply has an encoder (plain types in, bytes out) and a parser
(bytes in, plain types out). Parsers trust nothing: bytes that are not the protobuf message,
a missing part (no envelope, no key), an unknown failure kind or pull status, a task that
should be there and is not, all raise ``ProtocolError`` naming the problem; another protocol
version raises ``VersionMismatchError`` naming both. Ranges are left to validation, as in
``core.codec``. The gRPC layer moves bytes only (no generated serializers), so what a peer
sends reaches these parsers, and the fuzz harness can feed them exactly that.
"""

from __future__ import annotations

from phalanx.runtime.grpc.serde._core import METHODS, SERVICE, method_path
from phalanx.runtime.grpc.serde.replies import (
    ack_reply,
    heartbeat_reply,
    lease_reply,
    model_parts,
    parse_ack_reply,
    parse_heartbeat_reply,
    parse_lease_reply,
    parse_model_part,
    parse_pull_reply,
    parse_push_reply,
    parse_status_reply,
    pull_reply,
    push_reply,
    status_reply,
)
from phalanx.runtime.grpc.serde.requests import (
    get_model_request,
    heartbeat_request,
    join_request,
    leave_request,
    parse_get_model_request,
    parse_heartbeat_request,
    parse_join_request,
    parse_leave_request,
    parse_pull_request,
    parse_report_failure_request,
    parse_status_request,
    parse_update_part,
    pull_request,
    report_failure_request,
    status_request,
    update_parts,
)

__all__ = [
    "METHODS",
    "SERVICE",
    "ack_reply",
    "get_model_request",
    "heartbeat_reply",
    "heartbeat_request",
    "join_request",
    "lease_reply",
    "leave_request",
    "method_path",
    "model_parts",
    "parse_ack_reply",
    "parse_get_model_request",
    "parse_heartbeat_reply",
    "parse_heartbeat_request",
    "parse_join_request",
    "parse_lease_reply",
    "parse_leave_request",
    "parse_model_part",
    "parse_pull_reply",
    "parse_pull_request",
    "parse_push_reply",
    "parse_report_failure_request",
    "parse_status_reply",
    "parse_status_request",
    "parse_update_part",
    "pull_reply",
    "pull_request",
    "push_reply",
    "report_failure_request",
    "status_reply",
    "status_request",
    "update_parts",
]
