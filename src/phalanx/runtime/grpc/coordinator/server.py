"""Serving the coordinator: the aio server with the service registered, and the one
function that opens its port, insecure or with TLS credentials.

TLS plugs in at ``listen``: whoever holds the certificates builds
``grpc.ssl_server_credentials(...)`` and passes them; without credentials the port is
plaintext (loopback tests, a trusted network).
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from grpc_health.v1._async import HealthServicer  # what metrics.add_health registers

from phalanx.core.files import write_atomic
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.metrics import add_health, set_serving
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


async def start_serving(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None,
    port_file: Path | None,
) -> tuple[int, HealthServicer]:  # fmt: skip
    """Register the health service, open ``address``, start ``server`` and report it
    SERVING; then write the bound port to ``port_file``, so whoever reads the file finds a
    server that answers. Returns the port and the health servicer (to say NOT_SERVING)."""
    health = add_health(server)
    port = listen(server, address, credentials)
    await server.start()
    await set_serving(health, True)
    if port_file is not None:
        write_atomic(port_file, f"{port}\n".encode())
    return port, health
