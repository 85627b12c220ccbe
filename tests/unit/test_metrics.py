"""Coordinator metrics and health: a real engine round on the twin, observed as the run
lifecycle would, lands in the series (accepted, rejected by reason, committed, duration);
the handlers' counters; label values capped; registries do not collide; the exposition is
served over HTTP; the standard health service answers on a real aio server."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from tests.aio_server import serving
from tests.twin import MANIFEST, twin_config

from phalanx.core.messages import TaskKey
from phalanx.core.state import ServerState
from phalanx.engine.engine import Engine
from phalanx.engine.history import RoundRecord
from phalanx.errors import ConfigError
from phalanx.runtime.grpc.metrics import (
    MAX_REASONS,
    OTHER,
    CoordinatorMetrics,
    add_health,
    set_serving,
    start_metrics_server,
)
from phalanx.testing import Reply, ScriptedRuntime


def value(metrics: CoordinatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels or None)
    return math.nan if found is None else found


def _nan_from_client_2(key: TaskKey) -> Reply:
    if key.client != 2:
        return Reply()
    return Reply(update=lambda task: {"w": torch.full((3,), float("nan"))})


def _round(runtime: ScriptedRuntime, config: Any) -> tuple[ServerState, RoundRecord]:
    engine = Engine(config, runtime, membership=runtime.membership, models=runtime.models)
    state = engine.initial_state(torch.zeros(MANIFEST.dim), MANIFEST)
    return asyncio.run(engine.run_round(state))


def test_an_observed_engine_round_lands_in_the_series() -> None:
    config = twin_config(
        4, "selection.clients_per_round=4", "selection.over_selection=1.0", "quorum.min_updates=2"
    )
    runtime = ScriptedRuntime(MANIFEST, 4, script=_nan_from_client_2)
    state, record = _round(runtime, config)
    assert record.committed and record.rejection_counts()  # the round is what we think
    metrics = CoordinatorMetrics()
    metrics.observe_round(state, record)
    assert value(metrics, "phalanx_rounds_committed_total") == 1.0
    assert value(metrics, "phalanx_rounds_failed_total") == 0.0
    assert value(metrics, "phalanx_updates_accepted_total") == len(record.accepted) == 3
    (reason,) = record.rejection_counts()
    assert value(metrics, "phalanx_updates_rejected_total", reason=reason) == 1.0
    assert value(metrics, "phalanx_round_duration_seconds_count") == 1.0
    assert value(metrics, "phalanx_round_duration_seconds_sum") == pytest.approx(record.wall_s)
    assert value(metrics, "phalanx_model_version") == state.model_version == 1
    failed = RoundRecord(round=1, model_version=1, committed=False, wall_s=0.2)
    metrics.observe_round(state, failed)
    assert value(metrics, "phalanx_rounds_failed_total") == 1.0


def test_the_handlers_counters_and_a_cap_on_reasons() -> None:
    metrics = CoordinatorMetrics()
    metrics.bytes_in(1000)
    metrics.bytes_in(24)
    metrics.bytes_out(4096)
    metrics.members_live(17)
    metrics.update_rejected("Duplicate")
    metrics.update_rejected("duplicate")
    for i in range(MAX_REASONS + 5):
        metrics.update_rejected(f"free text {i}")
    assert value(metrics, "phalanx_bytes_in_total") == 1024.0
    assert value(metrics, "phalanx_bytes_out_total") == 4096.0
    assert value(metrics, "phalanx_members_live") == 17.0
    assert value(metrics, "phalanx_updates_rejected_total", reason="duplicate") == 2.0
    assert value(metrics, "phalanx_updates_rejected_total", reason=OTHER) == 6.0
    text = metrics.exposition().decode()
    assert text.count("phalanx_updates_rejected_total{") == MAX_REASONS + 1


def test_each_coordinator_has_its_own_registry() -> None:
    first, second = CoordinatorMetrics(), CoordinatorMetrics(CollectorRegistry())
    first.bytes_in(5)
    assert value(second, "phalanx_bytes_in_total") == 0.0
    assert b"python_gc" not in first.exposition()  # nothing of the global registry


def test_the_exposition_is_served_over_http() -> None:
    metrics = CoordinatorMetrics()
    metrics.members_live(3)
    server = start_metrics_server(metrics, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = answer.read().decode()
        assert "phalanx_members_live 3.0" in body
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{server.port}"):
            start_metrics_server(metrics, "127.0.0.1", server.port)
    finally:
        server.close()


def test_the_standard_health_service_answers() -> None:
    holder: dict[str, Any] = {}

    def build() -> grpc.aio.Server:
        server = grpc.aio.server()
        holder["health"] = add_health(server)
        return server

    with serving(build, lambda s: s.add_insecure_port("127.0.0.1:0")) as (loop, port):
        loop.run(set_serving(holder["health"], True))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def check(service: str) -> int:
                request = health_pb2.HealthCheckRequest(service=service)
                return int(stub.Check(request, timeout=10).status)

            serving_ = health_pb2.HealthCheckResponse.SERVING
            assert check("") == serving_ and check("phalanx.v1.Coordinator") == serving_
            loop.run(set_serving(holder["health"], False))
            assert check("") == health_pb2.HealthCheckResponse.NOT_SERVING
