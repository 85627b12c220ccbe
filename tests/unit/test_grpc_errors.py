"""The catalogue: each phalanx error becomes a status a client maps back to the very error;
anything else is INTERNAL and leaks nothing; only transport failures are retried."""

from __future__ import annotations

import grpc
import pytest

from phalanx import errors
from phalanx.runtime.grpc.errors import (
    CATALOGUE,
    ERROR_TRAILER,
    INTERNAL_DETAILS,
    error_of,
    is_transport,
    status_of,
)

Code = grpc.StatusCode


@pytest.mark.parametrize("cls", [cls for cls, _ in CATALOGUE])
def test_every_catalogued_error_comes_back_as_itself(cls: type[errors.PhalanxError]) -> None:
    code, details, trailers = status_of(cls("why it happened"))
    back = error_of(code, details, trailers)
    assert type(back) is cls and str(back) == "why it happened"


def test_codes_are_the_documented_ones() -> None:
    assert status_of(errors.VersionMismatchError("v"))[0] is Code.FAILED_PRECONDITION
    assert status_of(errors.SizeLimitError("big"))[0] is Code.RESOURCE_EXHAUSTED
    assert status_of(errors.ProtocolError("bad"))[0] is Code.INVALID_ARGUMENT
    assert status_of(errors.AuthError("who"))[0] is Code.UNAUTHENTICATED
    assert status_of(errors.PermissionDeniedError("no"))[0] is Code.PERMISSION_DENIED
    assert status_of(errors.StaleError("late"))[0] is Code.ABORTED
    assert status_of(errors.DuplicateError("again"))[0] is Code.ALREADY_EXISTS


def test_a_not_leader_refusal_carries_the_leaders_address() -> None:
    code, details, trailers = status_of(errors.NotLeaderError("not me", leader="10.0.0.2:7000"))
    back = error_of(code, details, trailers)
    assert isinstance(back, errors.NotLeaderError) and back.leader == "10.0.0.2:7000"


def test_anything_else_is_internal_and_says_nothing_of_itself() -> None:
    assert status_of(KeyError("secret path /etc/x")) == (Code.INTERNAL, INTERNAL_DETAILS, ())
    assert status_of(errors.CheckpointError("disk"))[0] is Code.INTERNAL


def test_without_the_trailer_the_code_decides_and_a_forged_trailer_cannot_override_it() -> None:
    assert type(error_of(Code.RESOURCE_EXHAUSTED, "too big")) is errors.SizeLimitError
    assert type(error_of(Code.INVALID_ARGUMENT, "x")) is errors.ProtocolError
    unavailable = error_of(Code.UNAVAILABLE, "connection reset")
    assert type(unavailable) is errors.RuntimeBackendError
    assert "UNAVAILABLE: connection reset" in str(unavailable)
    forged = error_of(Code.INTERNAL, "x", ((ERROR_TRAILER, "DuplicateError"),))
    assert type(forged) is errors.RuntimeBackendError
    assert type(error_of(Code.ABORTED, "x", ((ERROR_TRAILER, b"StaleError"),))) is (
        errors.StaleError
    )


def test_only_transport_failures_are_retried() -> None:
    assert is_transport(Code.UNAVAILABLE) and is_transport(Code.DEADLINE_EXCEEDED)
    refused = {code for _, code in CATALOGUE} - {Code.UNAVAILABLE}
    assert not any(is_transport(code) for code in refused)
