"""The ``phalanx.v1`` Coordinator service on grpc.aio: decode, call a handler, encode.

grpc.aio, not the thread-pool server: the coordinator's engine is asyncio, so handlers run
on the engine's loop without a thread hop, and a long-polling ``PullTask`` holds a
coroutine, not one of a bounded pool's threads, per waiting client.

The service is registered with no generated (de)serialisers: gRPC hands each method the raw
request bytes and sends the bytes it returns, so every byte a client sends goes through
``serde``'s parsers (and the fuzz harness tests exactly those). A phalanx error becomes a
status through the one catalogue (``errors``); anything else is INTERNAL with a fixed
message and a logged traceback, and the server goes on serving. Under mutual TLS each
client call's claimed id is checked against its client certificate (``check_peer``) right
after decoding, before the handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Never, TypeVar

import grpc

from phalanx.core.messages import ClientUpdate
from phalanx.errors import PhalanxError, ProtocolError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.errors import status_of
from phalanx.runtime.grpc.handlers import CoordinatorHandlers, check_peer, claimed_client
from phalanx.runtime.grpc.session import Caller, UpdateHeader
from phalanx.runtime.grpc.streams import UpdateReceiver

log = logging.getLogger("phalanx.runtime.grpc")
Context = grpc.aio.ServicerContext[bytes, bytes]
T = TypeVar("T")
R = TypeVar("R")
MESSAGE_HEADROOM = 64 << 10  # a chunk message's protobuf framing around its data
OFFLOAD_DIGEST_BYTES = 1 << 20  # updates past this are hashed off the event loop


class CoordinatorServicer:
    """Binds ``CoordinatorHandlers`` to the eight ``phalanx.v1.Coordinator`` methods."""

    def __init__(self, handlers: CoordinatorHandlers, limits: WireLimits) -> None:
        self._handlers = handlers
        self._limits = limits

    def generic_handler(self) -> grpc.GenericRpcHandler:
        h = self._handlers
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Join": self._unary("Join", serde.parse_join_request, h.join, serde.lease_reply),
            "Heartbeat": self._unary(
                "Heartbeat", serde.parse_heartbeat_request, h.heartbeat, serde.heartbeat_reply
            ),
            "PullTask": self._unary(
                "PullTask", serde.parse_pull_request, h.pull_task, serde.pull_reply
            ),
            "ReportFailure": self._unary(
                "ReportFailure",
                serde.parse_report_failure_request,
                lambda args: h.report_failure(*args),
                serde.ack_reply,
            ),
            "Leave": self._unary(
                "Leave", serde.parse_leave_request, lambda args: h.leave(*args), serde.ack_reply
            ),
            "Status": self._unary(  # looked up per call: handlers without it still serve
                "Status", serde.parse_status_request, lambda q: h.status(q), serde.status_reply
            ),
            "GetModel": grpc.unary_stream_rpc_method_handler(self._get_model),
            "PushUpdate": grpc.stream_unary_rpc_method_handler(self._push_update),
        }
        return grpc.method_handlers_generic_handler(serde.SERVICE.full_name, methods)

    def _unary(
        self,
        name: str,
        parse: Callable[[bytes], T],
        handle: Callable[[T], Awaitable[R]],
        encode: Callable[[R], bytes],
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def method(request: bytes, context: Context) -> bytes:
            try:
                parsed = parse(request)
                check_peer(context.auth_context(), claimed_client(parsed))
                return encode(await handle(parsed))
            except Exception as exc:
                await _abort(context, name, exc)

        return grpc.unary_unary_rpc_method_handler(method)

    async def _get_model(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        try:
            caller, ref = serde.parse_get_model_request(request)
            check_peer(context.auth_context(), caller.client)
            payload = await self._handlers.get_model(caller, ref)
            for part in serde.model_parts(payload, self._limits.chunk_bytes):
                yield part
        except Exception as exc:
            await _abort(context, "GetModel", exc)

    async def _push_update(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        """Admit on the header, then take chunks until the client closes the stream; the
        receiver refuses the first byte past the announced size, which admission checked
        against the limit, so nothing past the limit is ever buffered."""
        receiver = UpdateReceiver(self._limits)
        admitted: tuple[Caller, UpdateHeader] | None = None
        try:
            first = await anext(aiter(requests), None)
            if first is None:
                raise ProtocolError("a push with no message at all")
            caller, header = receiver.start(first)
            check_peer(context.auth_context(), caller.client)
            await self._handlers.admit_update(caller, header)
            admitted = (caller, header)
            async for data in requests:
                receiver.add(data)
            update = await _finish(receiver, caller.client)
            admitted = None  # handed over: push_update answers for it now
            return serde.push_reply(await self._handlers.push_update(caller, update))
        except Exception as exc:
            if admitted is not None:  # told before the client hears of it
                reason = str(exc) if isinstance(exc, PhalanxError) else "internal error"
                self._handlers.push_failed(*admitted, reason)
                admitted = None
            await _abort(context, "PushUpdate", exc)
        finally:
            if admitted is not None:  # cancelled, or the connection was lost
                self._handlers.push_failed(*admitted, "the push was cancelled or cut off")


async def _finish(receiver: UpdateReceiver, sender: int) -> ClientUpdate:
    """The digest check of a big update in a thread (hashlib releases the GIL), so the loop
    goes on taking other clients' chunks meanwhile; a small one inline (a thread hop costs
    more than hashing it)."""
    if receiver.received_bytes < OFFLOAD_DIGEST_BYTES:
        return receiver.finish(sender)
    return await asyncio.to_thread(receiver.finish, sender)


async def _abort(context: Context, method: str, error: Exception) -> Never:
    code, details, trailers = status_of(error)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed inside the coordinator", method, exc_info=error)
    else:
        log.debug("%s refused: %s", method, details)
    await context.abort(code, details, trailing_metadata=trailers)


def build_server(
    handlers: CoordinatorHandlers, limits: WireLimits, *, max_concurrent_rpcs: int | None = None
) -> grpc.aio.Server:
    """An aio server with the service registered and gRPC's own message-size limit set just
    above one chunk; the caller adds a port (insecure or TLS) and starts it."""
    size = limits.max_chunk_bytes + MESSAGE_HEADROOM
    options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_concurrent_rpcs)
    server.add_generic_rpc_handlers([CoordinatorServicer(handlers, limits).generic_handler()])
    return server
