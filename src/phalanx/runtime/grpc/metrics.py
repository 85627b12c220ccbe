"""Prometheus metrics of a coordinator, and the standard gRPC health service.

``CoordinatorMetrics`` keeps its series in its own ``CollectorRegistry``, never the global
one, so two coordinators in one process (tests, a benchmark) do not collide and nothing
else's metrics leak into its exposition. It hears of rounds as a run-lifecycle observer
(``observe_round``, a ``RoundHook``: called only after a round is committed or recorded as
discarded) and of the wire from the handlers (``update_rejected``, ``bytes_in``,
``bytes_out``, ``members_live``). Rejections carry their reason as a label; the label values
are capped (``MAX_REASONS``, then ``other``), so a coordinator that passes free text cannot
grow the registry without bound.

``start_metrics_server`` serves the exposition over HTTP (prometheus-client's own server,
on a daemon thread); ``add_health`` registers grpc's standard health service
(``grpc.health.v1.Health``) on an aio server, which answers SERVING for the server as a
whole until ``set_serving(health, False)`` or a graceful shutdown.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # grpc_health.v1.health.aio's class
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from phalanx.core.state import ServerState
from phalanx.engine.history import RoundRecord
from phalanx.errors import ConfigError
from phalanx.runtime.grpc import serde

NAMESPACE = "phalanx"
MAX_REASONS = 32
OTHER = "other"
ROUND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class CoordinatorMetrics:
    """The coordinator's series on a registry of their own (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self._rounds_committed = Counter(
            "rounds_committed", "Rounds committed.", namespace=ns, registry=r
        )
        self._rounds_failed = Counter(
            "rounds_failed", "Rounds discarded (no commit).", namespace=ns, registry=r
        )
        self._accepted = Counter(
            "updates_accepted", "Updates accepted into a round.", namespace=ns, registry=r
        )
        self._rejected = Counter(
            "updates_rejected", "Updates refused, by reason.", ["reason"], namespace=ns, registry=r
        )
        self._members_live = Gauge(
            "members_live", "Members with a live session.", namespace=ns, registry=r
        )
        self._bytes_in = Counter("bytes_in", "Payload bytes received.", namespace=ns, registry=r)
        self._bytes_out = Counter("bytes_out", "Payload bytes sent.", namespace=ns, registry=r)
        self._model_version = Gauge(
            "model_version",
            "Rounds committed so far (the model version).",
            namespace=ns,
            registry=r,
        )
        self._round_seconds = Histogram(
            "round_duration_seconds", "Wall time of a round, committed or not.",
            namespace=ns, registry=r, buckets=ROUND_BUCKETS,
        )  # fmt: skip
        self._reasons: set[str] = set()
        self._lock = threading.Lock()  # the reason set; prometheus' own series are thread-safe

    def observe_round(self, state: ServerState, record: RoundRecord) -> None:
        """A run-lifecycle observer (``RoundHook``): the round is durable (or discarded)."""
        (self._rounds_committed if record.committed else self._rounds_failed).inc()
        self._accepted.inc(len(record.accepted))
        for reason, count in record.rejection_counts().items():
            self._rejected.labels(reason=self._reason(reason)).inc(count)
        self._round_seconds.observe(max(record.wall_s, 0.0))
        self._model_version.set(state.model_version)

    def update_rejected(self, reason: str) -> None:
        """A push refused on the wire (stale, duplicate, over a limit, unauthenticated...)."""
        self._rejected.labels(reason=self._reason(reason)).inc()

    def bytes_in(self, n: int) -> None:
        self._bytes_in.inc(max(n, 0))

    def bytes_out(self, n: int) -> None:
        self._bytes_out.inc(max(n, 0))

    def members_live(self, n: int) -> None:
        self._members_live.set(n)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (what the HTTP server serves)."""
        return generate_latest(self.registry)

    def _reason(self, reason: str) -> str:
        label = reason.strip().lower()[:64] or OTHER
        with self._lock:
            if label in self._reasons:
                return label
            if len(self._reasons) >= MAX_REASONS:
                return OTHER
            self._reasons.add(label)
            return label


@dataclass
class MetricsServer:
    """The HTTP exposition server; ``port`` is the one bound (useful with port 0)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(metrics: CoordinatorMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` on a daemon thread (port 0: any
    free port); a port that cannot be bound is a ``ConfigError`` naming it."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return MetricsServer(server, thread)


def add_health(server: grpc.aio.Server) -> HealthServicer:
    """Register the standard health service on ``server`` (before it starts)."""
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    return health


async def set_serving(health: HealthServicer, serving: bool) -> None:
    """Report the server as a whole and the ``phalanx.v1.Coordinator`` service as SERVING or
    NOT_SERVING (say NOT_SERVING while the run stops, before the server does)."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", serde.SERVICE.full_name):
        await health.set(service, status)
