"""The one catalogue between phalanx errors and gRPC status codes, both ways.

The coordinator turns an error into a status code (what any gRPC client understands), its
message as the details, and a ``phalanx-error`` trailer naming the exact class, so a phalanx
client maps it back to the very error (two errors may share a code: a version mismatch and
a refusal from a non-leader are both FAILED_PRECONDITION). Without the trailer, the code
alone picks the error. Anything that is not a phalanx error is INTERNAL with a fixed message:
the coordinator logs the traceback and never sends it.

Codes a client retries (``TRANSPORT_CODES``) are the transport's failures only: what the
coordinator refused is never resent.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from phalanx.errors import (
    AuthError,
    BusyError,
    ConfigError,
    DuplicateError,
    LockedError,
    NotLeaderError,
    PermissionDeniedError,
    PhalanxError,
    ProtocolError,
    RefusedError,
    RuntimeBackendError,
    SizeLimitError,
    StaleError,
    VersionMismatchError,
)

ERROR_TRAILER = "phalanx-error"
LEADER_TRAILER = "phalanx-leader"
INTERNAL_DETAILS = "internal error in the coordinator (it logged the traceback)"
Code = grpc.StatusCode

CATALOGUE: tuple[tuple[type[PhalanxError], grpc.StatusCode], ...] = (
    (VersionMismatchError, Code.FAILED_PRECONDITION),
    (SizeLimitError, Code.RESOURCE_EXHAUSTED),
    (ProtocolError, Code.INVALID_ARGUMENT),
    (ConfigError, Code.INVALID_ARGUMENT),
    (PermissionDeniedError, Code.PERMISSION_DENIED),
    (AuthError, Code.UNAUTHENTICATED),
    (StaleError, Code.ABORTED),
    (DuplicateError, Code.ALREADY_EXISTS),
    (BusyError, Code.RESOURCE_EXHAUSTED),
    (NotLeaderError, Code.FAILED_PRECONDITION),
    (RefusedError, Code.FAILED_PRECONDITION),
    (LockedError, Code.UNAVAILABLE),
    (RuntimeBackendError, Code.UNAVAILABLE),
)
"""Most specific first: an error takes the code of the first class it is an instance of."""

BY_CODE: dict[grpc.StatusCode, type[PhalanxError]] = {
    Code.INVALID_ARGUMENT: ProtocolError,
    Code.FAILED_PRECONDITION: RefusedError,
    Code.RESOURCE_EXHAUSTED: SizeLimitError,  # grpc's own message-size refusal has no trailer
    Code.UNAUTHENTICATED: AuthError,
    Code.PERMISSION_DENIED: PermissionDeniedError,
    Code.ABORTED: StaleError,
    Code.ALREADY_EXISTS: DuplicateError,
}
"""A status without the trailer (from grpc itself, or another server): the error it means;
any other code is a ``RuntimeBackendError``."""

TRANSPORT_CODES = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED})
_BY_NAME = {cls.__name__: cls for cls, _ in CATALOGUE}

Trailers = tuple[tuple[str, str], ...]


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str, Trailers]:
    """(code, details, trailers) that tell a client about ``error``."""
    if not isinstance(error, PhalanxError):
        return Code.INTERNAL, INTERNAL_DETAILS, ()
    for cls, code in CATALOGUE:
        if isinstance(error, cls):
            trailers: Trailers = ((ERROR_TRAILER, cls.__name__),)
            if isinstance(error, NotLeaderError) and error.leader:
                trailers += ((LEADER_TRAILER, error.leader),)
            return code, str(error), trailers
    return Code.INTERNAL, str(error), ()


def error_of(
    code: grpc.StatusCode, details: str, trailers: Iterable[tuple[str, str | bytes]] = ()
) -> PhalanxError:
    """The phalanx error a client raises for a failed call."""
    found = {key: value if isinstance(value, str) else value.decode() for key, value in trailers}
    cls = _BY_NAME.get(found.get(ERROR_TRAILER, ""))
    if cls is not None and dict(CATALOGUE)[cls] == code:
        if cls is NotLeaderError:
            return NotLeaderError(details, leader=found.get(LEADER_TRAILER, ""))
        return cls(details)
    fallback = BY_CODE.get(code, RuntimeBackendError)
    return fallback(f"{code.name}: {details}" if fallback is RuntimeBackendError else details)


def error_of_rpc(error: grpc.RpcError) -> PhalanxError:
    """``error_of`` for a failed call as grpc raises it (blocking or aio client)."""
    if isinstance(error, grpc.aio.AioRpcError):
        trailers = error.trailing_metadata() or ()
        return error_of(error.code(), error.details() or "", trailers)
    if isinstance(error, grpc.Call):
        return error_of(error.code(), error.details() or "", error.trailing_metadata() or ())
    return RuntimeBackendError(f"gRPC call failed: {error}")


def is_transport(code: grpc.StatusCode) -> bool:
    """Whether a call that failed with ``code`` may be retried (the transport failed, the
    coordinator did not refuse anything)."""
    return code in TRANSPORT_CODES
