"""A local certificate authority for a deployment on one's own machines (``phalanx certs
make``): a CA, a server certificate for the coordinator's host names and addresses, and
optionally one client certificate per client id (common name ``client-<id>``, which
``tls.peer_client_id`` reads back).

ECDSA P-256 keys and SHA-256 signatures (fast to make, accepted by grpc's BoringSSL). Keys
are written unencrypted with mode 0600, certificates 0644, each file atomically. This is
for a local or lab deployment; a production one uses its organisation's PKI, whose files
``tls.server_credentials`` and ``tls.channel_credentials`` take just the same.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phalanx.core.files import write_atomic
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.tls import CLIENT_CN_PREFIX
from phalanx.types import ClientId

Key = ec.EllipticCurvePrivateKey
_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


@dataclass(frozen=True)
class Issuer:
    key: Key
    cert: x509.Certificate


@dataclass(frozen=True)
class MadeFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[ClientId, tuple[Path, Path]]  # id -> (certificate, key)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(subject: str, issuer: x509.Name, key: Key, days: int) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # clocks of a few machines disagree
        .not_valid_after(now + timedelta(days=days))
    )


def make_ca(common_name: str = "phalanx local CA", *, days: int = 365) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(common_name, _name(common_name), key, days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    flags = dict.fromkeys(_USAGES, False) | {"key_cert_sign": True, "crl_sign": True}
    usage = x509.KeyUsage(**flags)
    cert = builder.add_extension(usage, critical=True).sign(key, hashes.SHA256())
    return Issuer(key, cert)


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_leaf(
    ca: Issuer, common_name: str, *, hosts: Iterable[str] = (), client: bool, days: int = 365
) -> Issuer:
    """A certificate ``ca`` signs: a server's (its ``hosts`` as alternative names) or a
    client's."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = _builder(common_name, ca.cert.subject, key, days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    hosts = list(hosts)
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return Issuer(key, builder.sign(ca.key, hashes.SHA256()))


def _write(issuer: Issuer, cert_path: Path, key_path: Path) -> None:
    pem = issuer.cert.public_bytes(serialization.Encoding.PEM)
    key = issuer.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(cert_path, pem, mode=0o644)
    write_atomic(key_path, key, mode=0o600)


def make_local_pki(
    out_dir: Path,
    *,
    hosts: list[str],
    clients: Iterable[ClientId] = (),
    days: int = 365,
    replace: bool = False,
) -> MadeFiles:
    """A CA, a server certificate for ``hosts`` and a certificate per client in
    ``out_dir``: ca.pem (+ ca.key), server.pem/server.key, client-<id>.pem/.key. A directory
    that already holds a CA is refused unless ``replace``: a new CA would silently void
    every certificate the old one signed."""
    if (out_dir / "ca.pem").exists() and not replace:
        raise ConfigError(
            f"{out_dir} already holds a CA (ca.pem); choose another directory or replace it"
        )
    if not hosts:
        raise ConfigError("a server certificate needs at least one host name or address")
    if days < 1:
        raise ConfigError(f"certificates must be valid for at least one day; got {days}")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = make_ca(days=days)
    _write(ca, out_dir / "ca.pem", out_dir / "ca.key")
    server = make_leaf(ca, hosts[0], hosts=hosts, client=False, days=days)
    _write(server, out_dir / "server.pem", out_dir / "server.key")
    made: dict[ClientId, tuple[Path, Path]] = {}
    for client in sorted(set(clients)):
        name = f"{CLIENT_CN_PREFIX}{client}"
        paths = (out_dir / f"{name}.pem", out_dir / f"{name}.key")
        _write(make_leaf(ca, name, client=True, days=days), *paths)
        made[client] = paths
    return MadeFiles(out_dir / "ca.pem", out_dir / "server.pem", out_dir / "server.key", made)
