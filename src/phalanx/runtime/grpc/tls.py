"""TLS for ``phalanx.v1``: server authentication always, mutual TLS when the coordinator is
given a client CA.

Each PEM file is read and checked here, with the standard library's ``ssl`` (a client node
has no ``cryptography``), before grpc sees it: grpc reports a bad certificate only as a
failed handshake on the first call, long after start-up, so an unreadable file, a file that
is not PEM, or a key that does not belong to its certificate is a ``ConfigError`` naming
the file at once. ``phalanx certs make`` (``certs.py``) makes a CA and certificates for a
local deployment.

With mutual TLS each client certificate names its client (common name ``client-<id>``);
``peer_client_id`` reads it from a call's auth context, so a coordinator can refuse a
client that acts as another id than its certificate's.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from phalanx.errors import ConfigError
from phalanx.types import ClientId

CLIENT_CN_PREFIX = "client-"


def read_pem(path: Path, what: str) -> bytes:
    """The bytes of a PEM file, refused unless it holds at least one PEM block."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"the {what} {path} is not a PEM file (no -----BEGIN line)")
    return data


def _check_ca(path: Path, data: bytes) -> None:
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the CA bundle {path} holds no valid certificate: {exc}") from None


def _check_pair(cert: Path, key: Path) -> None:
    """The certificate parses, the key parses and the key is the certificate's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key), password=_no_password)
    except ssl.SSLError as exc:
        problem = "the key does not belong to the certificate" if "MISMATCH" in str(exc) else exc
        raise ConfigError(f"certificate {cert} with key {key}: {problem}") from None
    except (OSError, TypeError) as exc:  # TypeError: an encrypted key asked for a password
        raise ConfigError(f"certificate {cert} with key {key}: {exc}") from None


def _no_password() -> str:
    raise TypeError("the key is encrypted; phalanx needs an unencrypted key file")


def key_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """(key, certificate chain) PEM bytes, checked (grpc's order)."""
    chain, private = read_pem(cert, "certificate"), read_pem(key, "private key")
    _check_pair(cert, key)
    return private, chain


def ca_bundle(path: Path) -> bytes:
    data = read_pem(path, "CA bundle")
    _check_ca(path, data)
    return data


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """The coordinator's TLS: its certificate and key; with ``client_ca``, every client must
    present a certificate that CA signed (mutual TLS), or its handshake fails."""
    pair = key_pair(cert, key)
    roots = ca_bundle(client_ca) if client_ca is not None else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=roots, require_client_auth=roots is not None
    )


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """A client's TLS: the CA that signed the coordinator's certificate; with ``cert`` and
    ``key`` (both or neither), the client's own certificate for mutual TLS."""
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs its key and a key its certificate")
    roots = ca_bundle(ca)
    if cert is None or key is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    private, chain = key_pair(cert, key)
    return grpc.ssl_channel_credentials(roots, private_key=private, certificate_chain=chain)


def peer_client_id(auth_context: Mapping[str, Sequence[bytes]]) -> ClientId | None:
    """The client id a verified client certificate names (``client-<id>`` as its common
    name), or None (no mutual TLS, or a certificate that names no client)."""
    names = auth_context.get("x509_common_name") or ()
    for name in names:
        text = name.decode(errors="replace")
        digits = text.removeprefix(CLIENT_CN_PREFIX)
        if text.startswith(CLIENT_CN_PREFIX) and digits.isdigit():
            return int(digits)
    return None
