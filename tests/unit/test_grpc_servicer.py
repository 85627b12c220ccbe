"""The servicer end to end on a real loopback gRPC server, with fake handlers: every call
works; bad bytes are INVALID_ARGUMENT; another protocol version is FAILED_PRECONDITION
naming both; refusals keep their meaning; an oversized push is cut off while it streams; a
handler that breaks is INTERNAL and the server goes on serving.

The aio server runs on its own event loop in a thread (as the coordinator's would run on
the engine's loop); the tests call it with grpc's blocking client, raw bytes through serde.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import grpc
import pytest
import torch

from phalanx.core.messages import (
    PROTOCOL_VERSION,
    ClientUpdate,
    Envelope,
    ModelRef,
    TaskConfig,
    TaskFailure,
    TaskKey,
    TrainTask,
)
from phalanx.core.tensors import payload_digest
from phalanx.errors import AuthError, SizeLimitError, StaleError, VersionMismatchError
from phalanx.runtime.grpc import serde, servicer
from phalanx.runtime.grpc.assembly import WireLimits, raw_bytes, specs_of
from phalanx.runtime.grpc.errors import INTERNAL_DETAILS, error_of_rpc
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
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
from phalanx.runtime.grpc.streams import ModelReceiver
from phalanx.types import FailureKind

LIMITS = WireLimits(max_bytes=64 << 10, max_chunk_bytes=4 << 10, chunk_bytes=4 << 10)
MODEL = {"w": torch.arange(3000.0).reshape(30, 100), "b": torch.ones(10)}  # 3 chunks
MODEL_REF = ModelRef(4, payload_digest(MODEL))
CALLER = Caller(Envelope(run_id="run"), 3, "s-3")
TASK = TrainTask(Envelope(run_id="run"), TaskKey(4, 3, 0), MODEL_REF, TaskConfig(1, 8, 0.1, 5.0))
BROKEN_CLIENT = 99
PULLERS = 16


@dataclass
class FakeHandlers:
    updates: list[ClientUpdate] = field(default_factory=list)
    admitted: list[UpdateHeader] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reports: list[TaskFailure] = field(default_factory=list)
    pulling: int = 0
    all_pulling: asyncio.Event | None = None

    async def join(self, request: JoinRequest) -> Lease:
        if request.credential != "good":
            raise AuthError(f"client {request.client}: credential not accepted")
        return Lease(Envelope(run_id="run"), request.client, "s-3", 0.5, 2.0)

    async def heartbeat(self, caller: Caller) -> HeartbeatReply:
        return HeartbeatReply(Envelope(run_id="run"), (TaskKey(3, caller.client, 1),))

    async def pull_task(self, caller: Caller) -> PullReply:
        if caller.client == BROKEN_CLIENT:
            raise KeyError("a bug in the coordinator")
        if caller.session == "barrier":  # every puller waits until all of them are in
            self.all_pulling = self.all_pulling or asyncio.Event()
            self.pulling += 1
            if self.pulling == PULLERS:
                self.all_pulling.set()
            await asyncio.wait_for(self.all_pulling.wait(), timeout=20)
            return PullReply(Envelope(run_id="run"), PullStatus.NONE_YET)
        return PullReply(Envelope(run_id="run"), PullStatus.TASK, TASK)

    async def get_model(self, caller: Caller, ref: ModelRef) -> ModelPayload:
        if ref != MODEL_REF:
            raise StaleError(f"model version {ref.version} is not held")
        return ModelPayload(Envelope(run_id="run"), ref, specs_of(MODEL), raw_bytes(MODEL))

    async def admit_update(self, caller: Caller, header: UpdateHeader) -> None:
        if header.key.round < TASK.key.round:
            raise StaleError(f"round {header.key.round} is over")
        self.admitted.append(header)

    async def push_update(self, caller: Caller, update: ClientUpdate) -> PushReceipt:
        self.updates.append(update)
        return PushReceipt(Envelope(run_id="run"), update.key)

    def push_failed(self, caller: Caller, header: UpdateHeader, reason: str) -> None:
        self.failed.append(reason)

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack:
        self.reports.append(failure)
        return Ack(Envelope(run_id="run"))

    async def leave(self, caller: Caller, reason: str) -> Ack:
        return Ack(Envelope(run_id="run"))


@dataclass
class Served:
    channel: grpc.Channel
    handlers: FakeHandlers
    target: str

    def call(self, method: str, data: bytes) -> bytes:
        answer: bytes = self.channel.unary_unary(serde.method_path(method))(data, timeout=30)
        return answer

    def push(self, parts: Iterator[bytes]) -> bytes:
        answer: bytes = self.channel.stream_unary(serde.method_path("PushUpdate"))(
            parts, timeout=30
        )
        return answer


@pytest.fixture
def served() -> Iterator[Served]:
    handlers = FakeHandlers()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-test-server", daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = build_server(handlers, LIMITS)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    try:
        yield Served(channel, handlers, target)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(grace=1.0), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def failed(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def update(key: TaskKey = TASK.key, tensors: dict[str, torch.Tensor] | None = None) -> ClientUpdate:
    tensors = tensors if tensors is not None else {"w": torch.full((2000,), 0.5)}  # 2 chunks
    return ClientUpdate(
        Envelope(run_id="run"), key, MODEL_REF, 5, 5, 40, tensors, payload_digest(tensors),
        {"loss": 0.25},
    )  # fmt: skip


def test_join_heartbeat_pull_report_and_leave_work(served: Served) -> None:
    request = JoinRequest(Envelope(), 3, "good", 40)
    lease = serde.parse_lease_reply(served.call("Join", serde.join_request(request)))
    assert lease == Lease(Envelope(run_id="run"), 3, "s-3", 0.5, 2.0)
    beat = serde.parse_heartbeat_reply(served.call("Heartbeat", serde.heartbeat_request(CALLER)))
    assert beat.cancelled == (TaskKey(3, 3, 1),)
    pulled = serde.parse_pull_reply(served.call("PullTask", serde.pull_request(CALLER)))
    assert pulled == PullReply(Envelope(run_id="run"), PullStatus.TASK, TASK)
    failure = TaskFailure(TASK.key, FailureKind.CRASH, "training raised")
    ack = served.call("ReportFailure", serde.report_failure_request(CALLER, failure))
    assert serde.parse_ack_reply(ack) == Ack(Envelope(run_id="run"))
    assert served.handlers.reports == [failure]
    assert serde.parse_ack_reply(served.call("Leave", serde.leave_request(CALLER, "done")))


def test_a_model_streams_in_chunks_and_is_checked_against_its_sha256(served: Served) -> None:
    stream = served.channel.unary_stream(serde.method_path("GetModel"))
    receiver = ModelReceiver(MODEL_REF, LIMITS)
    parts = list(stream(serde.get_model_request(CALLER, MODEL_REF), timeout=30))
    assert len(parts) == 1 + 3
    for data in parts:
        receiver.add(data)
    got = receiver.finish()
    assert all(torch.equal(got[name], MODEL[name]) for name in MODEL)
    stale = ModelRef(3, "00")
    error = failed(lambda: list(stream(serde.get_model_request(CALLER, stale), timeout=30)))
    assert error.code() is grpc.StatusCode.ABORTED
    assert isinstance(error_of_rpc(error), StaleError)


def test_a_pushed_update_arrives_whole_with_the_caller_as_sender(served: Served) -> None:
    sent = update()
    receipt = serde.parse_push_reply(served.push(serde.update_parts(CALLER, sent, 4096)))
    assert receipt.key == TASK.key
    (got,) = served.handlers.updates
    assert got.sender == CALLER.client and got.metrics == {"loss": 0.25}
    assert torch.equal(got.tensors["w"], sent.tensors["w"]) and served.handlers.failed == []


def test_a_stale_push_is_refused_on_its_header(served: Served) -> None:
    stale = update(TaskKey(1, 3, 0))
    error = failed(lambda: served.push(serde.update_parts(CALLER, stale, 4096)))
    assert error.code() is grpc.StatusCode.ABORTED and "round 1 is over" in (error.details() or "")
    assert served.handlers.admitted == [] and served.handlers.failed == []


def test_a_push_whose_bytes_do_not_match_its_digest_is_refused(served: Served) -> None:
    sent = update()
    forged = replace(sent, digest="0" * 64)
    error = failed(lambda: served.push(serde.update_parts(CALLER, forged, 4096)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "do not match their digest" in (error.details() or "")
    assert served.handlers.updates == [] and len(served.handlers.failed) == 1


def test_a_push_hashed_while_it_streams_arrives_whole_or_is_refused_on_its_digest(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer, "HASH_AHEAD_BYTES", 4096)  # hash off the loop every chunk
    tensors = {"a": torch.linspace(-1.0, 1.0, 9000), "b": torch.ones(3000)}  # 12 chunks
    sent = update(tensors=tensors)
    serde.parse_push_reply(served.push(serde.update_parts(CALLER, sent, 4096)))
    (got,) = served.handlers.updates
    assert all(torch.equal(got.tensors[n], tensors[n]) for n in tensors)
    forged = replace(sent, digest=payload_digest({"a": tensors["a"]}))
    error = failed(lambda: served.push(serde.update_parts(CALLER, forged, 4096)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "do not match their digest" in (error.details() or "")
    assert len(served.handlers.updates) == 1 and len(served.handlers.failed) == 1


def test_an_oversized_push_is_cut_off_while_it_streams(served: Served) -> None:
    """The header announces 40 KiB (under the 64 KiB limit); the client streams 50 MiB.
    The server refuses the first chunk past 40 KiB and ends the call: the client's
    generator is stopped long before its end, and nothing reached the handler."""
    sent = update(tensors={"w": torch.zeros(10 << 10)})  # 40 KiB
    header = next(serde.update_parts(CALLER, sent, 4096))
    total = (50 << 20) // 4096
    produced = 0

    def parts() -> Iterator[bytes]:
        nonlocal produced
        yield header
        piece = bytes(4096)
        for seq in range(total):
            produced += 1
            yield pb.UpdatePart(chunk=pb.Chunk(seq=seq, data=piece)).SerializeToString()

    error = failed(lambda: served.push(parts()))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "chunk 10 brings 45056 bytes; 40960 were announced" in (error.details() or "")
    assert produced < total // 4, f"the client streamed {produced} of {total} chunks"
    assert served.handlers.updates == [] and "were announced" in served.handlers.failed[0]


def test_a_push_announcing_more_than_the_limit_is_refused_before_any_chunk(
    served: Served,
) -> None:
    big = update(tensors={"w": torch.zeros(20 << 10)})  # 80 KiB > 64 KiB
    error = failed(lambda: served.push(serde.update_parts(CALLER, big, 4096)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "of 81920 bytes exceeds the limit of 65536" in (error.details() or "")
    assert served.handlers.admitted == []


@pytest.mark.parametrize(
    ("method", "data", "problem"),
    [
        ("Join", b"\xff\xff\xff", "not a phalanx.v1.JoinRequest"),
        ("Heartbeat", b"", "HeartbeatRequest has no caller"),
        ("PushUpdate", b"", "UpdatePart has no start"),
    ],
)
def test_bad_bytes_are_invalid_argument(
    served: Served, method: str, data: bytes, problem: str
) -> None:
    if method == "PushUpdate":
        error = failed(lambda: served.push(iter([data])))
    else:
        error = failed(lambda: served.call(method, data))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (error.details() or "")


def test_another_protocol_version_is_failed_precondition_naming_both(served: Served) -> None:
    request = JoinRequest(Envelope(protocol=PROTOCOL_VERSION + 1), 3, "good", 40)
    error = failed(lambda: served.call("Join", serde.join_request(request)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert f"version {PROTOCOL_VERSION + 1}" in details
    assert f"version {PROTOCOL_VERSION}" in details


def test_a_refused_credential_is_unauthenticated_and_maps_back(served: Served) -> None:
    error = failed(
        lambda: served.call("Join", serde.join_request(JoinRequest(Envelope(), 3, "bad", 1)))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    back = error_of_rpc(error)
    assert isinstance(back, AuthError) and "credential not accepted" in str(back)


def test_a_broken_handler_is_internal_logged_and_the_server_keeps_serving(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Caller(Envelope(), BROKEN_CLIENT, "s")
    with caplog.at_level(logging.ERROR, logger="phalanx.runtime.grpc"):
        error = failed(lambda: served.call("PullTask", serde.pull_request(broken)))
    assert error.code() is grpc.StatusCode.INTERNAL and error.details() == INTERNAL_DETAILS
    assert "a bug in the coordinator" in caplog.text  # the traceback is logged, not sent
    assert serde.parse_pull_reply(served.call("PullTask", serde.pull_request(CALLER))).task == TASK


def test_long_polls_wait_side_by_side_without_holding_a_thread_each(served: Served) -> None:
    """Every pull waits until all of them are in: a server that held one thread per pull
    with fewer threads than pulls would never release them."""
    pull = served.channel.unary_unary(serde.method_path("PullTask"))
    waiter = Caller(Envelope(), 5, "barrier")
    futures = [pull.future(serde.pull_request(waiter), timeout=30) for _ in range(PULLERS)]
    replies = [serde.parse_pull_reply(f.result(timeout=30)) for f in futures]
    assert {reply.status for reply in replies} == {PullStatus.NONE_YET}


def test_a_push_the_client_abandons_is_reported_as_failed(served: Served) -> None:
    sent = update(tensors={"w": torch.zeros(10 << 10)})
    first, second, *_ = serde.update_parts(CALLER, sent, 4096)
    release = threading.Event()

    def parts() -> Iterator[bytes]:
        yield first
        yield second
        release.wait(timeout=30)  # the client stalls mid-stream, then gives up

    call = served.channel.stream_unary(serde.method_path("PushUpdate")).future(parts(), timeout=30)
    for _ in range(300):  # bounded: until the server has admitted the push
        if served.handlers.admitted:
            break
        threading.Event().wait(0.01)
    call.cancel()
    release.set()
    for _ in range(300):  # bounded: until the server has noticed
        if served.handlers.failed:
            break
        threading.Event().wait(0.01)
    (reason,) = served.handlers.failed  # grpc may end the stream or cancel the coroutine
    assert "4096 of 40960 bytes" in reason or reason == "the push was cancelled or cut off"
    assert served.handlers.updates == []


def test_a_message_past_grpcs_own_size_limit_is_refused_and_maps_to_a_size_error(
    served: Served,
) -> None:
    """The server accepts messages of one chunk and some framing; a bigger one is refused by
    gRPC before any phalanx code reads it (no trailer: the code alone says what it means)."""
    huge = JoinRequest(Envelope(), 3, "x" * (256 << 10), 1)
    error = failed(lambda: served.call("Join", serde.join_request(huge)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(error_of_rpc(error), SizeLimitError)


def test_an_aio_client_gets_the_same_errors_back(served: Served) -> None:
    async def join() -> BaseException:
        async with grpc.aio.insecure_channel(served.target) as channel:
            call = channel.unary_unary(serde.method_path("Join"))
            request = JoinRequest(Envelope(protocol=PROTOCOL_VERSION + 1), 3, "good", 1)
            try:
                await call(serde.join_request(request), timeout=30)
            except grpc.RpcError as error:
                return error_of_rpc(error)
            return AssertionError("the call succeeded")

    error = asyncio.run(join())
    assert isinstance(error, VersionMismatchError), error
    assert f"version {PROTOCOL_VERSION + 1}" in str(error)
