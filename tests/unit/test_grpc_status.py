"""The ``Status`` call: its messages round-trip through serde, the servicer answers it from
the handlers, and ``phalanx status HOST:PORT`` prints members, liveness and the round in
flight; without the operator credential it is refused, and an address where nothing listens
is a clear transport error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.aio_server import serving
from tests.secured_fake import OPERATOR, SecuredHandlers
from tests.unit.test_codec import envelopes, ints, text
from typer.testing import CliRunner

from phalanx.cli.app import app
from phalanx.errors import AuthError, ProtocolError, RuntimeBackendError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.credentials import CredentialBook, Scrypt, issue_credentials
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.servicer import build_server
from phalanx.runtime.grpc.session import CoordinatorStatus, MemberStatus, StatusQuery

RUNNER = CliRunner(env={"COLUMNS": "200"})
members = st.builds(
    MemberStatus, ints, st.booleans(), st.none() | st.floats(0, 1e9, allow_nan=False)
)


@given(st.builds(StatusQuery, envelopes, text))
def test_a_status_request_round_trips(query: StatusQuery) -> None:
    assert serde.parse_status_request(serde.status_request(query)) == query


statuses = st.builds(
    CoordinatorStatus, envelopes, st.tuples(members, members), st.none() | ints, ints, ints
)


@given(statuses)
def test_a_status_reply_round_trips(status: CoordinatorStatus) -> None:
    assert serde.parse_status_reply(serde.status_reply(status)) == status


def test_a_status_request_without_an_envelope_is_refused() -> None:
    with pytest.raises(ProtocolError, match="StatusRequest has no envelope"):
        serde.parse_status_request(pb.StatusRequest(credential="x").SerializeToString())


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    issue_credentials(tmp_path / "book.json", range(3), kdf=Scrypt(n=16))
    handlers = SecuredHandlers(CredentialBook.load(tmp_path / "book.json"))
    handlers.sessions[1] = "s-1"  # client 1 has joined
    limits = WireLimits(max_bytes=1 << 16, max_chunk_bytes=1 << 12, chunk_bytes=1 << 12)
    with serving(
        lambda: build_server(handlers, limits), lambda s: s.add_insecure_port("127.0.0.1:0")
    ) as (_, port):
        yield f"127.0.0.1:{port}"


def test_phalanx_status_prints_members_liveness_and_the_round_in_flight(
    target: str, tmp_path: Path
) -> None:
    token = tmp_path / "operator.token"
    token.write_text(OPERATOR + "\n")
    token.chmod(0o600)
    result = RUNNER.invoke(app, ["status", target, "--token-file", str(token)])
    assert result.exit_code == 0, result.output
    assert "round in flight 7, 6 committed, 1 failed; 1 of 3 members live" in result.output
    rows = [line.split("│")[1:4] for line in result.output.splitlines() if line.count("│") == 4]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert cells == [["0", "no", "never"], ["1", "yes", "0.2 s ago"], ["2", "no", "never"]]


def test_phalanx_status_without_the_operator_credential_is_refused(target: str) -> None:
    result = RUNNER.invoke(app, ["status", target])
    assert isinstance(result.exception, AuthError)
    assert result.exception.exit_code == 11


def test_phalanx_status_of_an_address_where_nothing_listens_is_a_transport_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = RUNNER.invoke(app, ["status", f"127.0.0.1:{port}", "--timeout", "2"])
    assert isinstance(result.exception, RuntimeBackendError)
    assert f"no answer from the coordinator at 127.0.0.1:{port}" in str(result.exception)
