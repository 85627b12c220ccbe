"""What a coordinator does for each ``phalanx.v1`` call, as plain async functions.

The servicer decodes a request, calls one of these with plain types (``session`` and
``core.messages``), and encodes the result; a handler refuses by raising a phalanx error
(``StaleError``, ``DuplicateError``, ``AuthError``, ...), which the catalogue turns into a
status code. Handlers are coroutines because the coordinator's engine is asyncio: a
long-poll ``pull_task`` awaits on the engine's loop instead of holding a thread per waiting
client.

A push comes in three steps. ``admit_update`` sees the header before a single tensor byte
is accepted: it authenticates the caller and refuses what is stale, duplicate or over a
limit, so a refused upload costs no memory. Once admitted, the servicer calls exactly one
of ``push_update`` (the update arrived whole, its digest matched; ``sender`` is the
admitted caller) or ``push_failed`` (the stream broke, was cancelled, or failed its
checks), so the coordinator can release what admission reserved and, if it likes, turn the
task into a failure at once.

Handlers do not see a call's TLS context; the servicer does, and binds it for them: under
mutual TLS every client call (join included) whose claimed client id is not the one its
verified client certificate names (``client-<id>``) is refused with
``PermissionDeniedError`` by ``check_peer`` before any handler runs, so a client holding
client 3's certificate can neither join as client 5 (even with client 5's credential) nor
use client 5's session. Without a client certificate (plaintext, or server-only TLS) there
is nothing to compare: the credential and the session decide alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskFailure
from phalanx.core.models import ModelBook
from phalanx.errors import PermissionDeniedError, ProtocolError, StaleError
from phalanx.runtime.grpc.assembly import flat_bytes
from phalanx.runtime.grpc.session import (
    Ack,
    Caller,
    CoordinatorStatus,
    HeartbeatReply,
    JoinRequest,
    Lease,
    ModelPayload,
    PullReply,
    PushReceipt,
    StatusQuery,
    UpdateHeader,
)
from phalanx.runtime.grpc.tls import peer_client_id
from phalanx.types import ClientId

PEER_CERTIFICATE = "x509_pem_cert"  # grpc's auth-context key of a verified peer certificate


class CoordinatorHandlers(Protocol):
    async def join(self, request: JoinRequest) -> Lease:
        """Register a client (again, after a restart of either side)."""
        ...

    async def heartbeat(self, caller: Caller) -> HeartbeatReply: ...

    async def pull_task(self, caller: Caller) -> PullReply:
        """A task, or ``NONE_YET`` after a wait the coordinator chooses and bounds, or
        ``FINISHED``."""
        ...

    async def get_model(self, caller: Caller, ref: ModelRef) -> ModelPayload:
        """The published model ``ref`` names (``StaleError`` when it is not held)."""
        ...

    async def admit_update(self, caller: Caller, header: UpdateHeader) -> None:
        """Refuse (by raising) a push before its bytes arrive."""
        ...

    async def push_update(self, caller: Caller, update: ClientUpdate) -> PushReceipt: ...

    def push_failed(self, caller: Caller, header: UpdateHeader, reason: str) -> None:
        """An admitted push did not arrive whole; must not block (called on cancellation)."""
        ...

    async def report_failure(self, caller: Caller, failure: TaskFailure) -> Ack: ...

    async def leave(self, caller: Caller, reason: str) -> Ack: ...

    async def status(self, query: StatusQuery) -> CoordinatorStatus:
        """For operators: members, liveness, the round in flight (``AuthError`` when the
        coordinator wants an operator credential and ``query`` has none it accepts)."""
        ...


def model_payload(book: ModelBook, ref: ModelRef, envelope: Envelope) -> ModelPayload:
    """What ``get_model`` answers from the engine's model book: the published flat vector's
    own bytes (little-endian float32, no copy on a little-endian host, nothing to encode or
    cache per version) and the manifest's specs. A version the book no longer holds is a
    ``StaleError``: the client's task is over, not its message malformed."""
    try:
        model = book.get(ref)
    except ProtocolError as exc:
        raise StaleError(str(exc)) from None
    return ModelPayload(envelope, ref, model.manifest.specs, flat_bytes(model.params))


def claimed_client(request: object) -> ClientId | None:
    """The client id a parsed request claims (a join's, or its caller's; None: ``Status``)."""
    if isinstance(request, tuple) and request:
        request = request[0]
    if isinstance(request, JoinRequest | Caller):
        return request.client
    return None


def check_peer(auth_context: Mapping[str, Iterable[bytes]], claimed: ClientId | None) -> None:
    """Refuse (``PermissionDeniedError``) a call claiming ``claimed`` over a connection whose
    verified client certificate names another client, or none; return when the id matches,
    the call claims no client, or the connection carries no client certificate."""
    context = {key: list(values) for key, values in auth_context.items()}
    if claimed is None or not context.get(PEER_CERTIFICATE):
        return
    owner = peer_client_id(context)
    if owner is None:
        raise PermissionDeniedError(
            f"client {claimed}: the TLS client certificate names no client (its common name "
            "must be client-<id>)"
        )
    if owner != claimed:
        raise PermissionDeniedError(
            f"client {claimed}: the TLS client certificate is client {owner}'s; a client "
            "acts only as itself"
        )
