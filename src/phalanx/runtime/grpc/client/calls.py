"""The seven ``phalanx.v1`` calls as a client makes them: plain types in, plain types out.

Bytes go through ``serde`` both ways (no generated stubs), so a client parses what a
coordinator sends with the same trust-nothing parsers the coordinator uses. Every reply's
envelope is judged by the client's ``Leadership`` before anything in it is used: another
run is ``RunMismatchError``; a deposed leader's epoch is ``DeposedLeaderError``, the
connection moved to the next address; a newer leadership than the session's is
``NewLeaderError``. A failed call raises ``TransportError`` when the transport failed
(``is_transport``, or CANCELLED because this client cut its own connection), the connection
moved to the next address (the same one when there is only one), so the next try
reconnects; a ``RedirectError`` for ``NotLeaderError``, the connection moved to the leader
the standby named (at once) or else to the next address; otherwise the phalanx error the
status stands for (``errors.error_of_rpc``): a refusal, never retried (``BusyError`` aside,
which ``Retrying`` tries later). Every call carries a deadline. A heartbeat that fails in
the transport moves nothing itself: it raises ``MissedBeatError`` naming the channel's
generation, and the heartbeat thread decides (another call may be using that channel, still
connecting under load: closing it would cancel that call).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc

from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskFailure
from phalanx.errors import ConfigError, NotLeaderError, RuntimeBackendError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.client.backoff import RedirectError, TransportError
from phalanx.runtime.grpc.client.channel import Connection, parse_addresses
from phalanx.runtime.grpc.client.leader import DeposedLeaderError, Leadership
from phalanx.runtime.grpc.errors import error_of_rpc, is_transport
from phalanx.runtime.grpc.session import (
    Caller,
    HeartbeatReply,
    JoinRequest,
    Lease,
    ModelHeader,
    PullReply,
    PushReceipt,
)
from phalanx.runtime.grpc.streams import ModelReceiver


class Reply(Protocol):
    @property
    def envelope(self) -> Envelope: ...


T = TypeVar("T")
R = TypeVar("R", bound=Reply)


@dataclass(frozen=True)
class Deadlines:
    """Seconds a call may take: ``unary_s`` for the short calls, ``poll_s`` for a PullTask
    long-poll (longer than the coordinator's own wait), ``transfer_s`` for a model download
    or a push (a task's time-to-live bounds a push further)."""

    unary_s: float = 10.0
    poll_s: float = 60.0
    transfer_s: float = 300.0


@dataclass(frozen=True)
class Cut:
    """A push to be cut off mid-stream: after ``parts`` messages went out (``sent`` is set
    when gRPC took them, and ``flush_s`` later they are on the wire), the connection is
    closed under it (an injected drop)."""

    parts: int
    sent: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    flush_s: float = 0.3


class MissedBeatError(TransportError):
    """A heartbeat failed in the transport; the connection was left as it was.
    ``generation``: the channel's, for ``Connection.rotate`` if the caller decides to move."""

    def __init__(self, message: str, generation: int) -> None:
        super().__init__(message)
        self.generation = generation


class CoordinatorCalls:
    def __init__(
        self, connection: Connection, deadlines: Deadlines, leadership: Leadership | None = None
    ) -> None:
        self.connection = connection
        self.deadlines = deadlines
        self.leadership = leadership if leadership is not None else Leadership()

    def join(self, request: JoinRequest) -> Lease:
        data = serde.join_request(request)
        return self._unary(
            "Join", data, serde.parse_lease_reply, self.deadlines.unary_s, lease=True
        )

    def heartbeat(self, caller: Caller, timeout_s: float) -> HeartbeatReply:
        data = serde.heartbeat_request(caller)
        return self._unary("Heartbeat", data, serde.parse_heartbeat_reply, timeout_s, beat=True)

    def pull(self, caller: Caller) -> PullReply:
        data = serde.pull_request(caller)
        return self._unary("PullTask", data, serde.parse_pull_reply, self.deadlines.poll_s)

    def report_failure(self, caller: Caller, failure: TaskFailure) -> None:
        data = serde.report_failure_request(caller, failure)
        self._unary("ReportFailure", data, serde.parse_ack_reply, self.deadlines.unary_s)

    def leave(self, caller: Caller, reason: str, timeout_s: float) -> None:
        data = serde.leave_request(caller, reason)
        self._unary("Leave", data, serde.parse_ack_reply, timeout_s)

    def get_model(self, caller: Caller, ref: ModelRef) -> ModelReceiver:
        """The model ``ref`` names, received whole and checked against its sha256 (call
        ``finish`` on the receiver for the tensors); a deposed leader's is refused on its
        header."""
        request = serde.get_model_request(caller, ref)

        def call(channel: grpc.Channel, where: str) -> ModelReceiver:
            receiver = ModelReceiver(ref, self.connection.limits)  # a fresh one per try
            stream: grpc.UnaryStreamMultiCallable[bytes, bytes]
            stream = channel.unary_stream(serde.method_path("GetModel"))
            for index, part in enumerate(stream(request, timeout=self.deadlines.transfer_s)):
                if index == 0 and isinstance(header := serde.parse_model_part(part), ModelHeader):
                    self.leadership.check(header.envelope, where)
                receiver.add(part)
            return receiver

        return self._guarded(call)

    def push(
        self, caller: Caller, update: ClientUpdate, timeout_s: float, cut: Cut | None = None
    ) -> PushReceipt:
        """Send ``update`` in chunks; with ``cut``, close the connection partway (the call
        then fails as a transport failure, as a real drop would)."""
        chunk = self.connection.limits.chunk_bytes
        timeout = min(timeout_s, self.deadlines.transfer_s)

        def call(channel: grpc.Channel, where: str) -> PushReceipt:
            parts = serde.update_parts(caller, update, chunk)  # a fresh stream per try
            stream: grpc.StreamUnaryMultiCallable[bytes, bytes]
            stream = channel.stream_unary(serde.method_path("PushUpdate"))
            if cut is None:
                return self._judged(serde.parse_push_reply(stream(parts, timeout=timeout)), where)
            future = stream.future(_cut_short(parts, cut), timeout=timeout)
            cut.sent.wait(timeout)
            threading.Event().wait(cut.flush_s)  # what was handed to gRPC goes out
            self.connection.reset(self.connection.current()[1])
            cut.done.set()
            return self._judged(serde.parse_push_reply(future.result(timeout=timeout)), where)

        return self._guarded(call)

    def _unary(
        self,
        method: str,
        data: bytes,
        parse: Callable[[bytes], R],
        timeout: float,
        *,
        lease: bool = False,
        beat: bool = False,
    ) -> R:
        def call(channel: grpc.Channel, where: str) -> R:
            unary: grpc.UnaryUnaryMultiCallable[bytes, bytes]
            unary = channel.unary_unary(serde.method_path(method))
            return self._judged(parse(unary(data, timeout=timeout)), where, lease=lease)

        return self._guarded(call, beat=beat)

    def _judged(self, reply: R, where: str, *, lease: bool = False) -> R:
        self.leadership.check(reply.envelope, where, lease=lease)
        return reply

    def _guarded(self, call: Callable[[grpc.Channel, str], T], *, beat: bool = False) -> T:
        """``call`` on the current channel, failures translated; ``beat``: a heartbeat (not
        counted as a call in progress; a transport failure moves nothing)."""
        where = self.connection.target
        channel, generation = self.connection.current()
        try:
            if beat:
                return call(channel, where)
            with self.connection.in_use():
                return call(channel, where)
        except grpc.RpcError as exc:
            error = self._translate(exc, generation, where, beat=beat)
            raise error from None
        except DeposedLeaderError:
            self.connection.rotate(generation)
            raise
        except ValueError as exc:
            if "closed channel" not in str(exc):  # grpc: "Cannot invoke RPC on closed channel!"
                raise
            self.connection.reset(generation)
            raise TransportError(f"the channel closed under the call: {exc}") from None

    def _translate(
        self, exc: grpc.RpcError, generation: int, where: str, *, beat: bool = False
    ) -> Exception:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if beat and (
            is_transport(code)
            if code is not None
            else isinstance(error_of_rpc(exc), RuntimeBackendError)
        ):
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return MissedBeatError(f"{where}: heartbeat: {details}", generation)
        if code is not None and (is_transport(code) or code is grpc.StatusCode.CANCELLED):
            if not beat:  # a heartbeat cancelled: another call replaced the channel already
                self.connection.rotate(generation)
            details = exc.details() if isinstance(exc, grpc.Call) else ""
            return TransportError(f"{where}: {code.name}: {details}")
        error = error_of_rpc(exc)
        if isinstance(error, NotLeaderError):
            return self._redirect(error, generation, where)
        if isinstance(error, RuntimeBackendError) and code is None:
            self.connection.rotate(generation)
            return TransportError(str(error))
        return error

    def _redirect(self, error: NotLeaderError, generation: int, where: str) -> RedirectError:
        """Go to the leader a standby named (at once), or else to the next address."""
        leader = _address(error.leader)
        if leader is not None and leader != where:
            self.connection.follow(generation, leader)
            return RedirectError(f"{where} does not lead ({error}); to the leader at {leader}",
                            at_once=True)  # fmt: skip
        self.connection.rotate(generation)
        return RedirectError(f"{where} does not lead ({error}) and names no leader; next address")


def _address(hint: str) -> str | None:
    """A standby's hint if it is one ``HOST:PORT`` (else None: no usable hint)."""
    try:
        addresses = parse_addresses(hint) if hint else ()
    except ConfigError:
        return None
    return addresses[0] if len(addresses) == 1 else None


def _cut_short(parts: Iterator[bytes], cut: Cut) -> Iterator[bytes]:
    """The first ``cut.parts`` messages, then a wait (bounded) while the connection is cut."""
    for index, part in enumerate(parts):
        if index == cut.parts:
            cut.sent.set()
            cut.done.wait(5.0)  # the stream ends with the cut
            return
        yield part
    cut.sent.set()


__all__ = ["CoordinatorCalls", "Cut", "Deadlines", "MissedBeatError", "Reply"]
