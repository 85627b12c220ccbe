"""Security at the wire, on a real loopback server over fake handlers that authenticate as
the coordinator must (tests/secured_fake.py): a caller without a valid credential or session
gets UNAUTHENTICATED and nothing else from every method, with one fixed message, no
payload and no handler work done; a client cannot act as another; a replayed push stream is
refused as a duplicate; a client over its rate limit is told to come back later."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch
from tests.aio_server import serving
from tests.secured_fake import SecuredHandlers

from phalanx.core.messages import (
    ClientUpdate,
    Envelope,
    ModelRef,
    TaskFailure,
    TaskKey,
)
from phalanx.core.tensors import payload_digest
from phalanx.errors import (
    AuthError,
    BusyError,
    DuplicateError,
    PermissionDeniedError,
)
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.credentials import CredentialBook, Scrypt, issue_credentials
from phalanx.runtime.grpc.errors import ERROR_TRAILER, error_of_rpc, status_of
from phalanx.runtime.grpc.limits import ClientLimiter
from phalanx.runtime.grpc.servicer import build_server
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease, StatusQuery
from phalanx.testing.replay import PushCapture, replay_push
from phalanx.types import FailureKind

LIMITS = WireLimits(max_bytes=64 << 10, max_chunk_bytes=4 << 10, chunk_bytes=4 << 10)
TIMEOUT_S = 10
REF = ModelRef(1, "ab")


@dataclass
class Served:
    target: str
    channel: grpc.Channel
    handlers: SecuredHandlers
    tokens: dict[int, str]

    def join(self, client: int) -> Lease:
        request = serde.join_request(JoinRequest(Envelope(), client, self.tokens[client], 10))
        return serde.parse_lease_reply(self.call("Join", request))

    def call(self, method: str, data: bytes) -> bytes:
        answer: bytes = self.channel.unary_unary(serde.method_path(method))(data, timeout=TIMEOUT_S)
        return answer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    tokens = issue_credentials(tmp_path / "book.json", range(3), kdf=Scrypt(n=16))
    handlers = SecuredHandlers(CredentialBook.load(tmp_path / "book.json"))
    with serving(
        lambda: build_server(handlers, LIMITS), lambda s: s.add_insecure_port("127.0.0.1:0")
    ) as (_, port):
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            yield Served(target, channel, handlers, tokens)


def update(client: int, round_: int = 1) -> ClientUpdate:
    tensors = {"w": torch.full((1500,), 0.5)}  # 2 chunks
    key = TaskKey(round_, client, 0)
    return ClientUpdate(Envelope(), key, REF, 5, 5, 10, tensors, payload_digest(tensors), {})


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_the_catalogue_maps_auth_errors_to_unauthenticated() -> None:
    code, details, trailers = status_of(AuthError("client 1: credential not accepted"))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert details == "client 1: credential not accepted"
    assert trailers == ((ERROR_TRAILER, "AuthError"),)
    assert status_of(PermissionDeniedError("no"))[0] is grpc.StatusCode.PERMISSION_DENIED


def test_an_unauthenticated_caller_gets_nothing_but_unauthenticated(served: Served) -> None:
    good = served.join(1)
    forged = Caller(Envelope(), 1, "not-the-session")
    unknown = Caller(Envelope(), 42, good.session)  # a real session, the wrong client
    failure = TaskFailure(TaskKey(1, 1, 0), FailureKind.CRASH, "x")
    calls = {
        "Join (wrong token)": lambda: served.call(
            "Join", serde.join_request(JoinRequest(Envelope(), 1, served.tokens[2], 1))
        ),
        "Join (unknown id)": lambda: served.call(
            "Join", serde.join_request(JoinRequest(Envelope(), 42, served.tokens[1], 1))
        ),
        "Heartbeat": lambda: served.call("Heartbeat", serde.heartbeat_request(forged)),
        "PullTask": lambda: served.call("PullTask", serde.pull_request(unknown)),
        "ReportFailure": lambda: served.call(
            "ReportFailure", serde.report_failure_request(forged, failure)
        ),
        "Leave": lambda: served.call("Leave", serde.leave_request(forged, "bye")),
        "Status": lambda: served.call("Status", serde.status_request(StatusQuery(Envelope()))),
        "GetModel": lambda: list(
            served.channel.unary_stream(serde.method_path("GetModel"))(
                serde.get_model_request(forged, REF), timeout=TIMEOUT_S
            )
        ),
        "PushUpdate": lambda: served.channel.stream_unary(serde.method_path("PushUpdate"))(
            serde.update_parts(forged, update(1), LIMITS.chunk_bytes), timeout=TIMEOUT_S
        ),
    }
    for name, call in calls.items():
        error = refused(call)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, name  # type: ignore[attr-defined]
        details = error.details() or ""  # type: ignore[attr-defined]
        assert details.endswith(": credential not accepted"), (name, details)
        trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert trailers == {ERROR_TRAILER: "AuthError"}, (name, trailers)
        assert isinstance(error_of_rpc(error), AuthError)
    assert served.handlers.reached == [] and served.handlers.updates == []


def test_a_client_cannot_push_as_another(served: Served) -> None:
    lease = served.join(1)
    me = Caller(Envelope(), 1, lease.session)
    push = served.channel.stream_unary(serde.method_path("PushUpdate"))
    error = refused(lambda: push(serde.update_parts(me, update(2), 4096), timeout=TIMEOUT_S))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert served.handlers.updates == []


def test_a_replayed_push_stream_is_refused_as_a_duplicate(served: Served) -> None:
    lease = served.join(1)
    me = Caller(Envelope(), 1, lease.session)
    capture = PushCapture()

    async def push_once() -> bytes:
        async with grpc.aio.insecure_channel(served.target, interceptors=[capture]) as channel:
            call = channel.stream_unary(serde.method_path("PushUpdate"))
            parts = serde.update_parts(me, update(1), LIMITS.chunk_bytes)
            reply: bytes = await call(parts, timeout=TIMEOUT_S)
            return reply

    receipt = serde.parse_push_reply(asyncio.run(push_once()))
    (stream,) = capture.streams
    assert stream == list(serde.update_parts(me, update(1), LIMITS.chunk_bytes))  # as sent
    with pytest.raises(DuplicateError, match="already received"):
        replay_push(served.target, stream, timeout_s=TIMEOUT_S)
    assert [u.key for u in served.handlers.updates] == [receipt.key]


def test_a_client_over_its_rate_is_told_to_come_back_later(served: Served) -> None:
    served.handlers.limiter = ClientLimiter(calls_per_s=0.001, burst=2)
    caller = Caller(Envelope(), 0, served.join(0).session)
    for _ in range(2):
        served.call("Heartbeat", serde.heartbeat_request(caller))
    error = refused(lambda: served.call("Heartbeat", serde.heartbeat_request(caller)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    back = error_of_rpc(error)
    assert isinstance(back, BusyError) and "retry in" in str(back)
