"""The coordinator side of ``phalanx.v1``: the engine's Runtime port over gRPC.

::

    GrpcRuntime        the Runtime port on the wall clock: task board (mailboxes for the
                       clients' long-polls), event queue, upload slots, liveness sweep,
                       and the membership roster the engine selects from
    CoordinatorService the CoordinatorHandlers: join (Authenticator), sessions, heartbeats,
                       pulls, model downloads, push admission, failure reports, leaves
    coordinator_server the aio server for a service; ``listen`` opens its port (TLS when
                       given server credentials)
    ServeSettings      heartbeat, patience, long-poll wait, upload slots, wire limits

The engine decides everything about rounds; this package only moves messages.
"""

from __future__ import annotations

from phalanx.runtime.grpc.coordinator.access import (
    AnyCredential,
    Authenticator,
    Limiter,
    Sessions,
)
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.coordinator.server import coordinator_server, listen
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.coordinator.settings import ServeSettings

__all__ = [
    "AnyCredential",
    "Authenticator",
    "CoordinatorService",
    "GrpcRuntime",
    "Limiter",
    "ServeSettings",
    "Sessions",
    "coordinator_server",
    "listen",
]
