"""Serving the coordinator: the aio server with the service registered, and the one
function that opens its port, insecure or with TLS credentials.

TLS plugs in at ``listen``: whoever holds the certificates builds
``grpc.ssl_server_credentials(...)`` and passes them; without credentials the port is
plaintext (loopback tests, a trusted network).
"""

from __future__ import annotations

import logging

import grpc

from phalanx.errors import ConfigError
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.servicer import build_server

log = logging.getLogger("phalanx.runtime.grpc.coordinator")


def coordinator_server(runtime: GrpcRuntime, service: CoordinatorService) -> grpc.aio.Server:
    """A server (not yet listening) for ``service``; ``runtime.close`` stops it."""
    server = build_server(service, runtime.settings.limits)
    runtime.attach(server)
    return server


def check_address(address: str) -> str:
    """``address``'s host, once it is known to be ``HOST:PORT`` with a port in range."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:50051); got {address!r}")
    return host


def listen(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Open ``address`` (``HOST:PORT``; port 0 picks a free one) and return the bound port."""
    host = check_address(address)
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise ConfigError(f"cannot listen on {address} (in use, or not this machine's address)")
    log.info("listening on %s:%d (%s)", host, bound, "TLS" if credentials else "plaintext")
    return bound
