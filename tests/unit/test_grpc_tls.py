"""TLS on a real aio server on loopback, with certificates from ``phalanx certs make``: a
client that trusts the CA gets through; one that trusts another CA is refused at the
handshake; with mutual TLS a client without a certificate is refused, one with a
certificate gets through and its client id is read back. Bad PEM files are clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tests.aio_server import serving
from typer.testing import CliRunner

from phalanx.cli.app import app
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.certs import MadeFiles, make_local_pki
from phalanx.runtime.grpc.tls import channel_credentials, peer_client_id, server_credentials

METHOD = "/test.Echo/Who"
TIMEOUT_S = 10


def _echo_server() -> grpc.aio.Server:
    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        client = peer_client_id(context.auth_context())
        return request + f"|{client}".encode()

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    server.add_generic_rpc_handlers([handler])
    return server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> MadeFiles:
    return make_local_pki(tmp_path_factory.mktemp("pki"), hosts=["localhost", "127.0.0.1"],
                          clients=[3])  # fmt: skip


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_local_pki(tmp_path_factory.mktemp("other"), hosts=["localhost"]).ca


def _serve(credentials: grpc.ServerCredentials) -> Iterator[int]:
    with serving(_echo_server, lambda s: s.add_secure_port("127.0.0.1:0", credentials)) as (
        _,
        port,
    ):
        yield port


def _call(port: int, credentials: grpc.ChannelCredentials) -> bytes:
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        answer: bytes = channel.unary_unary(METHOD)(b"hi", timeout=TIMEOUT_S)
        return answer


@pytest.fixture
def tls_port(pki: MadeFiles) -> Iterator[int]:
    yield from _serve(server_credentials(pki.server_cert, pki.server_key))


@pytest.fixture
def mtls_port(pki: MadeFiles) -> Iterator[int]:
    yield from _serve(server_credentials(pki.server_cert, pki.server_key, client_ca=pki.ca))


def test_a_client_that_trusts_the_ca_completes_the_handshake(pki: MadeFiles, tls_port: int) -> None:
    assert _call(tls_port, channel_credentials(pki.ca)) == b"hi|None"


def test_a_client_that_trusts_another_ca_is_refused(other_ca: Path, tls_port: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(tls_port, channel_credentials(other_ca))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_mutual_tls_refuses_a_client_without_a_certificate(pki: MadeFiles, mtls_port: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(mtls_port, channel_credentials(pki.ca))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_mutual_tls_admits_a_client_certificate_and_names_its_client(
    pki: MadeFiles, mtls_port: int
) -> None:
    cert, key = pki.clients[3]
    assert _call(mtls_port, channel_credentials(pki.ca, cert, key)) == b"hi|3"


def test_bad_pem_files_are_config_errors_naming_the_file(pki: MadeFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    client_cert, client_key = pki.clients[3]
    cases = [
        (lambda: server_credentials(tmp_path / "absent.pem", pki.server_key), "cannot read"),
        (lambda: server_credentials(junk, pki.server_key), "is not a PEM file"),
        (lambda: server_credentials(pki.server_cert, client_key), "does not belong"),
        (lambda: channel_credentials(broken), "holds no valid certificate"),
        (lambda: channel_credentials(pki.ca, client_cert), "needs its key"),
    ]
    for make, problem in cases:
        with pytest.raises(ConfigError, match=problem) as info:
            make()
        assert problem != "is not a PEM file" or str(junk) in str(info.value)


def test_peer_client_id_reads_only_client_common_names() -> None:
    assert peer_client_id({"x509_common_name": [b"client-12"]}) == 12
    assert peer_client_id({"x509_common_name": [b"localhost"]}) is None
    assert peer_client_id({"x509_common_name": [b"client-x1"]}) is None
    assert peer_client_id({}) is None


def test_certs_make_writes_private_keys_for_the_owner_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["certs", "make", "--out-dir", str(tmp_path), "--clients", "0-1"]
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"ca.pem", "ca.key", "server.pem", "server.key", "client-0.pem",
                     "client-0.key", "client-1.pem", "client-1.key"}  # fmt: skip
    for key in tmp_path.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key


def test_certs_make_will_not_replace_a_ca_unasked(tmp_path: Path) -> None:
    make_local_pki(tmp_path, hosts=["localhost"])
    ca = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="already holds a CA"):
        make_local_pki(tmp_path, hosts=["localhost"])
    assert (tmp_path / "ca.pem").read_bytes() == ca
    make_local_pki(tmp_path, hosts=["localhost"], replace=True)
    assert (tmp_path / "ca.pem").read_bytes() != ca
