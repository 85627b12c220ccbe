"""The credential book: one secret per client id, stored on the coordinator only as a salted
scrypt hash.

``issue_credentials`` makes a random token per client (``secrets.token_urlsafe``: 256 bits),
hands the tokens back once, and records in the book only ``scrypt(token, salt)`` with a
fresh salt per entry and the scrypt parameters beside it, so a stolen book reveals no token
and the parameters can be raised later without invalidating older entries. Issuing again
for an id rotates it (the old token stops working); ``revoke_credentials`` removes ids.

The coordinator loads the book once (``CredentialBook.load``) and calls ``verify`` on each
join. An unknown id, a revoked id and a wrong token get the very same ``AuthError``, after
the same work (an unknown id is hashed against a dummy entry), and the comparison is
constant-time: a caller learns nothing about which ids exist. The book re-reads its file
when it changes on disk, so ``phalanx credentials revoke`` takes effect at the next join
without a restart (a file that no longer parses is logged and the last good book kept).

The tokens are random and long, so scrypt here defends a leaked book, not weak passwords:
its cost (about 15 ms per verify at n = 2**12) is kept low enough for joins; a coordinator
with many joins at once should verify in an executor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from phalanx.core.files import write_atomic
from phalanx.errors import AuthError, ConfigError
from phalanx.types import ClientId

log = logging.getLogger("phalanx.runtime.grpc")
FORMAT = "phalanx-credentials"
SECRET_MODE = 0o600
TOKEN_BYTES = 32
NOT_ACCEPTED = "credential not accepted"
MAX_CREDENTIAL = 256  # characters; an issued token has 43


class Scrypt(BaseModel):
    """scrypt's parameters, recorded per entry (``hashlib.scrypt``'s names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(default="scrypt", pattern="^scrypt$")
    n: int = Field(default=1 << 12, ge=2, le=1 << 20)  # a power of two
    r: int = Field(default=8, ge=1, le=32)
    p: int = Field(default=1, ge=1, le=16)
    dklen: int = Field(default=32, ge=16, le=64)

    @field_validator("n")
    @classmethod
    def _power_of_two(cls, n: int) -> int:
        if n & (n - 1):
            raise ValueError(f"scrypt's n must be a power of two; got {n}")
        return n

    def derive(self, token: str, salt: bytes) -> bytes:
        need = 128 * self.r * (self.n + self.p + 2)  # OpenSSL's scrypt working memory
        return hashlib.scrypt(
            token.encode(), salt=salt, n=self.n, r=self.r, p=self.p, dklen=self.dklen,
            maxmem=2 * need + (1 << 20),
        )  # fmt: skip


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    salt: str = Field(pattern="^[0-9a-f]{32,}$")
    hash: str = Field(pattern="^[0-9a-f]{32,}$")
    kdf: Scrypt

    @model_validator(mode="after")
    def _hash_length(self) -> Entry:
        if len(self.hash) != 2 * self.kdf.dklen:
            raise ValueError(f"a hash of {len(self.hash) // 2} bytes; dklen says {self.kdf.dklen}")
        return self


class BookFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = Field(pattern=f"^{FORMAT}$")
    version: int = Field(ge=1, le=1)
    clients: dict[int, Entry]


def new_entry(token: str, kdf: Scrypt) -> Entry:
    salt = secrets.token_bytes(16)
    return Entry(salt=salt.hex(), hash=kdf.derive(token, salt).hex(), kdf=kdf)


@cache
def _dummy(kdf: Scrypt) -> Entry:
    """What an unknown id is checked against: the same work as a known one's check."""
    return new_entry(secrets.token_urlsafe(TOKEN_BYTES), kdf)


@dataclass(frozen=True)
class _Stamp:
    """What identifies one version of the file on disk (atomic writes change the inode)."""

    inode: int
    mtime_ns: int
    size: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _Stamp(st.st_ino, st.st_mtime_ns, st.st_size)


def read_book(path: Path) -> BookFile:
    """The book at ``path``; ``ConfigError`` naming the file and what is wrong with it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no credential book at {path}: make one with `phalanx credentials issue --book "
            f"{path} --ids 0-9 --out-dir DIR`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the credential book {path}: {exc}") from None
    try:
        return BookFile.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0:3]
        raise ConfigError(f"{path} is not a phalanx credential book: {' '.join(first)}") from None


def write_book(path: Path, book: BookFile) -> None:
    text = json.dumps(book.model_dump(mode="json"), indent=1, sort_keys=True) + "\n"
    write_atomic(path, text.encode(), mode=SECRET_MODE)  # never readable by others


def _open_or_new(path: Path) -> BookFile:
    if path.exists():
        return read_book(path)
    return BookFile(format=FORMAT, version=1, clients={})


def issue_credentials(
    path: Path, client_ids: Iterable[ClientId], *, kdf: Scrypt | None = None
) -> dict[ClientId, str]:
    """New tokens for ``client_ids`` (rotating any they had), recorded hashed in the book at
    ``path`` (created if absent, written atomically, mode 0600). The tokens are returned
    once and stored nowhere."""
    ids = sorted(set(client_ids))
    if not ids or any(i < 0 for i in ids):
        raise ConfigError(f"client ids must be non-negative and at least one; got {ids}")
    book = _open_or_new(path)
    tokens = {client: secrets.token_urlsafe(TOKEN_BYTES) for client in ids}
    method = kdf or Scrypt()
    clients = {**book.clients, **{c: new_entry(t, method) for c, t in tokens.items()}}
    write_book(path, book.model_copy(update={"clients": clients}))
    return tokens


def revoke_credentials(path: Path, client_ids: Iterable[ClientId]) -> list[ClientId]:
    """Remove ``client_ids`` from the book; the ids that were in it (the rest were not)."""
    book = read_book(path)
    gone = sorted(set(client_ids) & set(book.clients))
    clients = {c: e for c, e in book.clients.items() if c not in gone}
    write_book(path, book.model_copy(update={"clients": clients}))
    return gone


class CredentialBook:
    """The coordinator's view of the book: ``verify`` a client's token (see module doc)."""

    def __init__(self, path: Path, book: BookFile) -> None:
        self.path = path
        self._book = book
        self._stamp = _stamp(path)

    @classmethod
    def load(cls, path: Path) -> CredentialBook:
        return cls(path, read_book(path))

    @property
    def clients(self) -> frozenset[ClientId]:
        self._refresh()
        return frozenset(self._book.clients)

    def verify(self, client: ClientId, credential: str) -> None:
        """Return if ``credential`` is ``client``'s token, else raise ``AuthError`` (the same
        for an unknown id, a revoked one and a wrong token)."""
        self._refresh()
        entry = self._book.clients.get(client)
        known = entry is not None and len(credential) <= MAX_CREDENTIAL
        entry = entry or _dummy(self._typical_kdf())
        credential = credential[:MAX_CREDENTIAL]  # a huge one costs no more than a token
        derived = entry.kdf.derive(credential, bytes.fromhex(entry.salt))
        if not (hmac.compare_digest(derived, bytes.fromhex(entry.hash)) and known):
            raise AuthError(f"client {client}: {NOT_ACCEPTED}")

    def _typical_kdf(self) -> Scrypt:
        return next(iter(self._book.clients.values())).kdf if self._book.clients else Scrypt()

    def _refresh(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        try:
            self._book = read_book(self.path)
        except ConfigError as exc:
            log.error("keeping the credential book loaded before: %s", exc)
        self._stamp = stamp


def read_token(path: Path) -> str:
    """A client's token from its token file (as ``phalanx credentials issue`` wrote it),
    refused when unreadable or empty; a file others may read is logged as a warning."""
    try:
        token = path.read_text().strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(
            f"{path} holds no token (one line, as `phalanx credentials issue` writes)"
        )
    if mode & 0o077:
        log.warning("token file %s is readable by others (mode %o): chmod 600 it", path, mode)
    return token


def token_files(out_dir: Path, tokens: dict[ClientId, str]) -> list[Path]:
    """One file per client in ``out_dir`` (``client-<id>.token``, mode 0600)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for client, token in sorted(tokens.items()):
        path = out_dir / f"client-{client}.token"
        write_atomic(path, f"{token}\n".encode(), mode=SECRET_MODE)
        written.append(path)
    return written
