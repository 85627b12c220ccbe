"""Replaying a captured push: the test double for an attacker who recorded a client's
``PushUpdate`` stream off the wire (or a client that resent one) and sends it again.

``PushCapture`` is a grpc.aio client interceptor: a client channel made with it records each
push stream it sends, message by message, exactly as it went out. ``replay_push`` sends such
a recording again, byte for byte, to any coordinator and returns its receipt or raises the
phalanx error it answered with. A coordinator must refuse the replay (``DuplicateError``:
the task key was already received; ``StaleError`` once the round is over): submissions are
idempotent by task key, so a replay can never be aggregated twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc

from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.errors import error_of_rpc
from phalanx.runtime.grpc.session import PushReceipt

PUSH = serde.method_path("PushUpdate")


async def _each(parts: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(parts, AsyncIterable):
        async for part in parts:
            yield part
    else:
        for part in parts:
            yield part


class PushCapture(grpc.aio.StreamUnaryClientInterceptor):
    """Records every ``PushUpdate`` stream sent through the channel (``streams``)."""

    def __init__(self) -> None:
        self.streams: list[list[bytes]] = []

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else method
        if name != PUSH:
            return await continuation(client_call_details, request_iterator)
        recorded: list[bytes] = []
        self.streams.append(recorded)

        async def recording() -> AsyncIterator[bytes]:
            async for part in _each(request_iterator):
                recorded.append(part)
                yield part

        return await continuation(client_call_details, recording())


def replay_push(
    target: str,
    parts: Sequence[bytes],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    timeout_s: float = 10.0,
) -> PushReceipt:
    """Send a recorded push stream to ``target`` again; its receipt, or the phalanx error the
    coordinator refused it with (``DuplicateError`` for a replay it caught)."""
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        push: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(PUSH)
        try:
            reply: bytes = push(iter(list(parts)), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise error_of_rpc(exc) from None
    return serde.parse_push_reply(reply)
