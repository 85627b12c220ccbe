"""A throwaway certificate authority for TLS tests: a CA, a server certificate for
localhost and 127.0.0.1, and a client certificate, as PEM files (cryptography, EC P-256)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool = False, server: bool = False,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )  # fmt: skip
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_pki(root: Path, *, client: int = 2) -> Pki:
    """The CA, the server's certificate, and client ``client``'s (common name client-<id>,
    the id a coordinator under mutual TLS holds it to)."""
    keys = {who: ec.generate_private_key(ec.SECP256R1()) for who in ("ca", "server", "client")}
    ca = _certificate("phalanx test CA", keys["ca"], "phalanx test CA", keys["ca"], ca=True)
    server = _certificate("localhost", keys["server"], "phalanx test CA", keys["ca"], server=True)
    mine = _certificate(f"client-{client}", keys["client"], "phalanx test CA", keys["ca"])

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def private(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip

    return Pki(
        _write(root / "ca.pem", pem(ca)),
        _write(root / "server.pem", pem(server)),
        _write(root / "server.key", private(keys["server"])),
        _write(root / "client.pem", pem(mine)),
        _write(root / "client.key", private(keys["client"])),
    )
