"""Mutual TLS binds a client to its certificate's id, on a real aio server on loopback with
certificates from ``phalanx certs make`` (``make_local_pki``): a join, and every later call,
claiming another client id than the certificate names is PERMISSION_DENIED before any
handler runs (even with the other client's valid credential and session); a certificate
that names no client may act as no client (an operator's ``Status`` still answers);
without a client certificate nothing is compared. The client process ends on the refusal
(``PermissionDeniedError``, exit code 11)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from tests.aio_server import serving
from tests.fake_coordinator import FakeCoordinator, Served
from tests.secured_fake import OPERATOR, SecuredHandlers
from tests.unit.test_grpc_client import ME, agent_for, run_bounded, shard
from tests.unit.test_grpc_security import LIMITS, REF, TIMEOUT_S, update

from phalanx.core.messages import Envelope, TaskFailure, TaskKey
from phalanx.errors import PermissionDeniedError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.certs import Issuer, MadeFiles, make_leaf, make_local_pki
from phalanx.runtime.grpc.client import TlsFiles
from phalanx.runtime.grpc.credentials import CredentialBook, Scrypt, issue_credentials
from phalanx.runtime.grpc.errors import ERROR_TRAILER, error_of_rpc
from phalanx.runtime.grpc.servicer import build_server
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease, StatusQuery
from phalanx.runtime.grpc.tls import channel_credentials, server_credentials
from phalanx.types import FailureKind


@dataclass(frozen=True)
class Certs:
    made: MadeFiles
    nobody: tuple[Path, Path]  # signed by the same CA, common name "operator"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("pki")
    made = make_local_pki(root, hosts=["localhost", "127.0.0.1"], clients=[1, 2])
    key = load_pem_private_key((root / "ca.key").read_bytes(), None)
    ca = Issuer(key, x509.load_pem_x509_certificate(made.ca.read_bytes()))  # type: ignore[arg-type]
    leaf = make_leaf(ca, "operator", client=True)
    cert, private = root / "operator.pem", root / "operator.key"
    cert.write_bytes(leaf.cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certs(made, (cert, private))


@dataclass
class Mtls:
    port: int
    handlers: SecuredHandlers
    tokens: dict[int, str]
    certs: Certs

    def channel(self, cert: tuple[Path, Path] | None) -> grpc.Channel:
        ca = self.certs.made.ca
        creds = channel_credentials(ca, *cert) if cert is not None else channel_credentials(ca)
        return grpc.secure_channel(f"127.0.0.1:{self.port}", creds)

    def join(self, channel: grpc.Channel, client: int) -> Lease:
        request = serde.join_request(JoinRequest(Envelope(), client, self.tokens[client], 10))
        return serde.parse_lease_reply(call(channel, "Join", request))


def call(channel: grpc.Channel, method: str, data: bytes) -> bytes:
    answer: bytes = channel.unary_unary(serde.method_path(method))(data, timeout=TIMEOUT_S)
    return answer


def serve(certs: Certs, tmp_path: Path, *, mutual: bool) -> Iterator[Mtls]:
    tokens = issue_credentials(tmp_path / "book.json", range(3), kdf=Scrypt(n=16))
    handlers = SecuredHandlers(CredentialBook.load(tmp_path / "book.json"))
    made = certs.made
    credentials = server_credentials(
        made.server_cert, made.server_key, client_ca=made.ca if mutual else None
    )

    def bind(s: grpc.aio.Server) -> int:
        return s.add_secure_port("127.0.0.1:0", credentials)

    with serving(lambda: build_server(handlers, LIMITS), bind) as (_, port):
        yield Mtls(port, handlers, tokens, certs)


@pytest.fixture
def mtls(certs: Certs, tmp_path: Path) -> Iterator[Mtls]:
    yield from serve(certs, tmp_path, mutual=True)


@pytest.fixture
def tls_only(certs: Certs, tmp_path: Path) -> Iterator[Mtls]:
    yield from serve(certs, tmp_path, mutual=False)


def denied(action: Callable[[], object]) -> str:
    """The details of the PERMISSION_DENIED that ``action`` must raise."""
    with pytest.raises(grpc.RpcError) as info:
        action()
    error = info.value
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    assert trailers == {ERROR_TRAILER: "PermissionDeniedError"}
    assert isinstance(error_of_rpc(error), PermissionDeniedError)
    return error.details() or ""  # type: ignore[attr-defined]


def test_a_join_as_another_client_than_the_certificate_is_refused(mtls: Mtls) -> None:
    with mtls.channel(mtls.certs.made.clients[1]) as channel:
        assert mtls.join(channel, 1).client == 1  # its own id: admitted
        details = denied(lambda: mtls.join(channel, 2))  # client 2's valid credential
    assert details == (
        "client 2: the TLS client certificate is client 1's; a client acts only as itself"
    )
    assert set(mtls.handlers.sessions) == {1}  # the handler never saw the second join


def test_every_later_call_is_bound_to_the_certificate(mtls: Mtls) -> None:
    clients = mtls.certs.made.clients
    with mtls.channel(clients[2]) as own, mtls.channel(clients[1]) as other:
        session = mtls.join(own, 2).session
        theirs = Caller(Envelope(), 2, session)  # client 2's real session
        call(own, "Heartbeat", serde.heartbeat_request(theirs))  # from its own certificate
        failure = TaskFailure(TaskKey(1, 2, 0), FailureKind.CRASH, "x")
        attempts: dict[str, Callable[[], object]] = {
            "Heartbeat": lambda: call(other, "Heartbeat", serde.heartbeat_request(theirs)),
            "PullTask": lambda: call(other, "PullTask", serde.pull_request(theirs)),
            "ReportFailure": lambda: call(
                other, "ReportFailure", serde.report_failure_request(theirs, failure)
            ),
            "Leave": lambda: call(other, "Leave", serde.leave_request(theirs, "bye")),
            "GetModel": lambda: list(
                other.unary_stream(serde.method_path("GetModel"))(
                    serde.get_model_request(theirs, REF), timeout=TIMEOUT_S
                )
            ),
            "PushUpdate": lambda: other.stream_unary(serde.method_path("PushUpdate"))(
                serde.update_parts(theirs, update(2), LIMITS.chunk_bytes), timeout=TIMEOUT_S
            ),
        }
        for name, attempt in attempts.items():
            assert "certificate is client 1's" in denied(attempt), name
    assert mtls.handlers.reached == ["heartbeat"] and mtls.handlers.updates == []


def test_a_certificate_naming_no_client_acts_as_none(mtls: Mtls) -> None:
    with mtls.channel(mtls.certs.nobody) as channel:
        assert "names no client" in denied(lambda: mtls.join(channel, 1))
        status = call(channel, "Status", serde.status_request(StatusQuery(Envelope(), OPERATOR)))
    assert serde.parse_status_reply(status).round_in_flight == 7  # Status claims no client
    assert mtls.handlers.sessions == {}


def test_without_a_client_certificate_nothing_is_compared(tls_only: Mtls) -> None:
    with tls_only.channel(None) as channel:
        assert [tls_only.join(channel, c).client for c in (1, 2)] == [1, 2]


def test_the_client_process_ends_on_a_certificate_of_another_id(certs: Certs) -> None:
    made = certs.made
    creds = server_credentials(made.server_cert, made.server_key, client_ca=made.ca)
    with Served(FakeCoordinator(finish=True), creds) as served:
        wrong = agent_for(served, shard(), tls=TlsFiles(made.ca, *made.clients[2]))
        with pytest.raises(PermissionDeniedError, match="certificate is client 2's") as info:
            run_bounded(wrong)
        assert info.value.exit_code == 11 and served.fake.joins == []
        right = agent_for(served, shard(), tls=TlsFiles(made.ca, *made.clients[ME]))
        run_bounded(right)
    assert [j.client for j in served.fake.joins] == [ME]
