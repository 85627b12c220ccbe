"""A coordinator's whole run: the same engine and run lifecycle as the embedded simulation
(checkpoints, resume, the run-directory lock, history, observers after each commit), with
the gRPC runtime in place of simulated clients.

::

    listen      the server opens its port (TLS when the endpoint has credentials), with the
                standard health service; the bound port is announced (``on_listening``) and
                written to the port file; metrics served over HTTP when a port is given
    start       RunLifecycle.start: a fresh state or the newest committed checkpoint
    rounds      RunLifecycle.run(engine.run_round): each round waits, bounded by
                selection.member_wait_s and saying so, for the members its quorum needs
    farewell    health says NOT_SERVING, pulls answer FINISHED; the clients get a bounded
                moment to leave
    close       the runtime stops the server; the engine and lifecycle release what they hold

The model (initial weights, manifest, evaluator) is given: building it from a workload or a
user's app is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1._async import HealthServicer  # what metrics.add_health registers

from phalanx.checkpoint import build_store
from phalanx.config import RunConfig
from phalanx.coordinator import HistoryLog, RunDirectory, RunInterrupted, RunLifecycle, StopSignals
from phalanx.coordinator.lifecycle import RunRound
from phalanx.core.models import ModelBook
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.engine.engine import Engine, Evaluate, RoundHook
from phalanx.engine.history import RoundRecord
from phalanx.runtime.grpc.coordinator.access import Authenticator, Limiter, OperatorToken
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.coordinator.server import (
    check_address,
    coordinator_server,
    start_serving,
)
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.coordinator.settings import ServeSettings
from phalanx.runtime.grpc.metrics import (
    CoordinatorMetrics,
    MetricsServer,
    set_serving,
    start_metrics_server,
)

log = logging.getLogger("phalanx.runtime.grpc.coordinator")
FAREWELL_S = 2.0  # how long clients get to hear FINISHED and leave before the server stops


@dataclass(frozen=True)
class ServedModel:
    params: torch.Tensor  # the initial weights, flat
    manifest: Manifest
    evaluate: Evaluate | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where to listen: ``HOST:PORT`` (port 0: any free one), server credentials for TLS
    (None: plaintext), a file to write the bound port to, and the port of the Prometheus
    metrics (None: not served; 0: any free one) on the same host."""

    address: str
    credentials: grpc.ServerCredentials | None = None
    port_file: Path | None = None
    metrics_port: int | None = None


@dataclass(frozen=True)
class Guard:
    """Who may call: the clients' credentials, an optional per-client limiter, and the
    operator token ``Status`` wants (None: anyone may ask)."""

    authenticator: Authenticator
    limiter: Limiter | None = None
    operator: OperatorToken | None = None


@dataclass
class ServeResult:
    state: ServerState
    history: list[dict[str, Any]]
    rounds_time_s: float
    port: int


class Deployment:
    def __init__(
        self, config: RunConfig, model: ServedModel, *, settings: ServeSettings, guard: Guard
    ) -> None:
        self.config = config
        self.model = model
        self.settings = settings
        self.guard = guard
        self.metrics = CoordinatorMetrics()

    async def run(
        self, directory: RunDirectory, endpoint: Endpoint, *, resume: bool = False,
        observers: Sequence[RoundHook] = (), signals: StopSignals | None = None,
        on_listening: Callable[[int], None] | None = None,
    ) -> ServeResult:  # fmt: skip
        """Serve the run in ``directory`` (acquired here, released at the end). A stop
        signal abandons the round in flight and raises ``RunInterrupted`` holding what
        committed."""
        directory.acquire()
        try:
            return await self._run(directory, endpoint, resume, observers, signals, on_listening)
        finally:
            directory.release()

    async def _run(
        self, directory: RunDirectory, endpoint: Endpoint, resume: bool,
        observers: Sequence[RoundHook], signals: StopSignals | None,
        on_listening: Callable[[int], None] | None,
    ) -> ServeResult:  # fmt: skip
        config = self.config.model_copy(
            update={"checkpoint": self.config.checkpoint.resolved(Path.cwd())}
        )
        store = (
            build_store(config.checkpoint, directory.checkpoints)
            if config.checkpoint.every
            else None
        )
        history = HistoryLog(directory.history)
        models = ModelBook(self.model.manifest)
        runtime = GrpcRuntime(models=models, settings=self.settings, run_id=directory.run_id)
        runtime.membership.on_live = self.metrics.members_live
        watchers = [runtime.progress.observe, self.metrics.observe_round, *observers]
        lifecycle = RunLifecycle(config, store=store, history=history, observers=watchers)
        engine = Engine(
            self.config, runtime, membership=runtime.membership, evaluate=self.model.evaluate,
            models=models, run_id=directory.run_id,
        )  # fmt: skip
        health: HealthServicer | None = None
        metrics_server: MetricsServer | None = None
        try:
            port, health = await self._listen(runtime, endpoint)
            metrics_server = self._serve_metrics(endpoint)
            if on_listening is not None:
                on_listening(port)
            state = lifecycle.start(
                engine.initial_state(self.model.params, self.model.manifest),
                resume=resume, where=str(directory.path),
            )  # fmt: skip
            runtime.progress.at(state)
            directory.begin(config, resumed_at=state.round if resume else None)
            start = time.perf_counter()
            state = await self._rounds(
                lifecycle, _tracked(engine, runtime), state, signals, history, port
            )
            await set_serving(health, False)
            await self._farewell_unless_stopped(runtime, signals)
            return ServeResult(state, history.records(), time.perf_counter() - start, port)
        finally:
            if health is not None:
                await set_serving(health, False)
            await runtime.close(timeout_s=FAREWELL_S)
            if metrics_server is not None:
                metrics_server.close()
            engine.close()
            lifecycle.close()

    async def _listen(self, runtime: GrpcRuntime, endpoint: Endpoint) -> tuple[int, HealthServicer]:
        guard = self.guard
        service = CoordinatorService(
            runtime, guard.authenticator, limiter=guard.limiter, metrics=self.metrics,
            operator=guard.operator,
        )  # fmt: skip
        server = coordinator_server(runtime, service)
        return await start_serving(
            server, endpoint.address, endpoint.credentials, endpoint.port_file
        )

    def _serve_metrics(self, endpoint: Endpoint) -> MetricsServer | None:
        if endpoint.metrics_port is None:
            return None
        host = check_address(endpoint.address)
        server = start_metrics_server(self.metrics, host, endpoint.metrics_port)
        log.warning("metrics on http://%s:%d/metrics", host, server.port)
        return server

    @staticmethod
    async def _rounds(
        lifecycle: RunLifecycle, run_round: RunRound, state: ServerState,
        signals: StopSignals | None, history: HistoryLog, port: int,
    ) -> ServerState:  # fmt: skip
        task = asyncio.current_task()
        if signals is not None and task is not None:
            signals.attach(task)
        start = time.perf_counter()
        try:
            return await lifecycle.run(run_round, state)
        except (asyncio.CancelledError, KeyboardInterrupt):
            if signals is None or signals.signum is None or signals.forced:
                raise
            committed = lifecycle.state or state
            result = ServeResult(committed, history.records(), time.perf_counter() - start, port)
            raise RunInterrupted(signals.signum, result) from None

    @classmethod
    async def _farewell_unless_stopped(
        cls, runtime: GrpcRuntime, signals: StopSignals | None
    ) -> None:
        """The farewell, cut short by a stop signal: every round is committed by now, so a
        SIGTERM here ends the run as finished (the chaos runs found it ending in a
        CancelledError traceback instead)."""
        try:
            await cls._farewell(runtime)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if signals is None or signals.signum is None or task is None:
                raise
            task.uncancel()
            log.info("stop signal during the farewell: the run is complete, stopping now")

    @staticmethod
    async def _farewell(runtime: GrpcRuntime) -> None:
        """Tell every poller the run is over and give live clients a bounded moment to
        leave (a client in mid-task hears FINISHED at its next pull)."""
        runtime.board.finish()
        end = time.monotonic() + FAREWELL_S
        while runtime.membership.live_count() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if runtime.membership.live_count():
            log.info("%d clients still live as the server stops", runtime.membership.live_count())


def _tracked(engine: Engine, runtime: GrpcRuntime) -> RunRound:
    """``engine.run_round``, telling the runtime's progress which round is in flight."""

    async def run_round(state: ServerState) -> tuple[ServerState, RoundRecord]:
        runtime.progress.round_in_flight = state.round
        return await engine.run_round(state)

    return run_round
