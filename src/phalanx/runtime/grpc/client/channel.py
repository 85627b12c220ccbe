"""The one place a client's channel to the coordinator is made, and remade.

``open_channel`` takes optional channel credentials: None is a plaintext channel (loopback,
tests), else TLS with the credentials ``tls_credentials`` builds from PEM files (a root CA to
check the coordinator's certificate; a client certificate and key too for mutual TLS).
gRPC's own message-size limits are set a little above a chunk, as the server's are.

``Connection`` holds the current channel for every thread of a client (the session's calls
and the heartbeat thread), to one of the coordinator addresses it was given (several: a
group of coordinators of which one leads). After a transport failure it is replaced by a
fresh channel, to the same address (``reset``) or to the next one of the list (``rotate``),
so a retry after the coordinator restarts connects at once instead of waiting out gRPC's own
reconnect backoff (up to two minutes by default); ``follow`` goes to the address a standby
named as the leader's. Generations keep two threads that saw the same failure from
switching twice. ``in_use`` counts the calls in progress (the heartbeat's aside), so the
heartbeat thread can tell whether replacing the channel would cut another call (``busy``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from phalanx.errors import ConfigError
from phalanx.runtime.grpc.assembly import WireLimits

MESSAGE_HEADROOM = 64 << 10  # a chunk message's protobuf framing around its data


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: ``ca`` checks the coordinator; ``cert`` and ``key`` (both or neither)
    identify this client for mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return any(p is not None for p in (self.ca, self.cert, self.key))


def _read_pem(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
    return data


def parse_addresses(text: str) -> tuple[str, ...]:
    """``HOST:PORT[,HOST:PORT...]`` as a tuple, in order, duplicates dropped; anything else
    is a ``ConfigError`` naming the entry."""
    addresses: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"--server {text!r}: {entry!r} is not HOST:PORT (give one address, or several "
                "separated by commas)"
            )
        if entry not in addresses:
            addresses.append(entry)
    return tuple(addresses)


def tls_credentials(files: TlsFiles) -> grpc.ChannelCredentials | None:
    """Channel credentials from ``files``; None when no TLS file is given (plaintext)."""
    if not files.enabled:
        return None
    if (files.cert is None) != (files.key is None):
        raise ConfigError("mutual TLS needs both --tls-cert and --tls-key (or neither)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(files.ca, "--tls-ca"),
        private_key=_read_pem(files.key, "--tls-key"),
        certificate_chain=_read_pem(files.cert, "--tls-cert"),
    )


def open_channel(
    target: str,
    limits: WireLimits,
    credentials: grpc.ChannelCredentials | None = None,
    *,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to ``target`` (``HOST:PORT``), TLS when ``credentials`` are given;
    ``server_name`` overrides the name the certificate must carry (tests, IP targets)."""
    size = limits.max_chunk_bytes + MESSAGE_HEADROOM
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
    ]
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


class Connection:
    """The current channel to one of ``targets``, replaced after a transport failure."""

    def __init__(
        self,
        targets: str | Sequence[str],
        limits: WireLimits,
        credentials: grpc.ChannelCredentials | None = None,
        *,
        server_name: str | None = None,
    ) -> None:
        self.targets = (targets,) if isinstance(targets, str) else tuple(targets)
        if not self.targets:
            raise ConfigError("no coordinator address to connect to")
        self.limits = limits
        self._credentials = credentials
        self._server_name = server_name
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._generation = 0
        self._index = 0  # the list's entry in use (or last used, while following a hint)
        self._target = self.targets[0]
        self._calls = 0  # calls in progress (``in_use``)
        self.resets = 0
        self.switches = 0  # to another address

    @property
    def target(self) -> str:
        """The address calls go to now."""
        with self._lock:
            return self._target

    def current(self) -> tuple[grpc.Channel, int]:
        """The channel and its generation (pass it to ``reset``, ``rotate``, ``follow``)."""
        with self._lock:
            if self._channel is None:
                self._channel = open_channel(
                    self._target, self.limits, self._credentials, server_name=self._server_name
                )
                self._generation += 1
            return self._channel, self._generation

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Count a call in progress for ``busy`` while the block runs."""
        with self._lock:
            self._calls += 1
        try:
            yield
        finally:
            with self._lock:
                self._calls -= 1

    @property
    def busy(self) -> bool:
        """Whether a call (other than a heartbeat) is in progress."""
        with self._lock:
            return self._calls > 0

    def reset(self, generation: int) -> None:
        """Close the channel of ``generation`` (cutting its connection and every call on
        it); the next ``current`` opens a fresh one to the same address. A stale
        generation is a no-op."""
        self._replace(generation, None)

    def rotate(self, generation: int) -> None:
        """As ``reset``, and the next channel goes to the next address of the list."""
        self._replace(generation, -1)

    def follow(self, generation: int, leader: str) -> None:
        """As ``reset``, and the next channel goes to ``leader`` (a standby's hint), which
        need not be in the list; a rotation from there goes on with the list."""
        self._replace(generation, leader)

    def _replace(self, generation: int, where: str | int | None) -> None:
        with self._lock:
            if self._channel is None or generation != self._generation:
                return  # another thread replaced it already
            channel, self._channel = self._channel, None
            self.resets += 1
            before = self._target
            if isinstance(where, str):
                self._target = where
                if where in self.targets:
                    self._index = self.targets.index(where)
            elif where is not None:
                self._index = (self._index + 1) % len(self.targets)
                self._target = self.targets[self._index]
            if self._target != before:
                self.switches += 1
        if channel is not None:
            channel.close()

    def close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
