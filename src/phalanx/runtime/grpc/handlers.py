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
"""

from __future__ import annotations

from typing import Protocol

from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskFailure
from phalanx.core.models import ModelBook
from phalanx.errors import ProtocolError, StaleError
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
