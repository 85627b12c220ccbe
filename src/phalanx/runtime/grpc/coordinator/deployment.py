"""A coordinator's whole run: the same engine and run lifecycle as the embedded simulation
(checkpoints, resume, the run-directory lock, history, observers after each commit), with
the gRPC runtime in place of simulated clients.

::

    listen      the server opens its port (TLS when the endpoint has credentials); the bound
                port is announced (``on_listening``) and written to the port file
    start       RunLifecycle.start: a fresh state or the newest committed checkpoint
    rounds      RunLifecycle.run(engine.run_round): each round waits, bounded by
                selection.member_wait_s and saying so, for the members its quorum needs
    farewell    pulls answer FINISHED; the clients get a bounded moment to leave
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

from phalanx.checkpoint import build_store
from phalanx.config import RunConfig
from phalanx.coordinator import HistoryLog, RunDirectory, RunInterrupted, RunLifecycle, StopSignals
from phalanx.core.files import write_atomic
from phalanx.core.models import ModelBook
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.engine.engine import Engine, Evaluate, RoundHook
from phalanx.runtime.grpc.coordinator.access import Authenticator, Limiter
from phalanx.runtime.grpc.coordinator.runtime import GrpcRuntime
from phalanx.runtime.grpc.coordinator.server import coordinator_server, listen
from phalanx.runtime.grpc.coordinator.service import CoordinatorService
from phalanx.runtime.grpc.coordinator.settings import ServeSettings

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
    (None: plaintext), and a file to write the bound port to."""

    address: str
    credentials: grpc.ServerCredentials | None = None
    port_file: Path | None = None


@dataclass
class ServeResult:
    state: ServerState
    history: list[dict[str, Any]]
    rounds_time_s: float
    port: int


class Deployment:
    def __init__(
        self,
        config: RunConfig,
        model: ServedModel,
        *,
        settings: ServeSettings,
        authenticator: Authenticator,
        limiter: Limiter | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.settings = settings
        self._authenticator = authenticator
        self._limiter = limiter

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
        lifecycle = RunLifecycle(config, store=store, history=history, observers=observers)
        models = ModelBook(self.model.manifest)
        runtime = GrpcRuntime(models=models, settings=self.settings, run_id=directory.run_id)
        engine = Engine(
            self.config, runtime, membership=runtime.membership, evaluate=self.model.evaluate,
            models=models, run_id=directory.run_id,
        )  # fmt: skip
        try:
            port = await self._listen(runtime, endpoint)
            if on_listening is not None:
                on_listening(port)
            state = lifecycle.start(
                engine.initial_state(self.model.params, self.model.manifest),
                resume=resume, where=str(directory.path),
            )  # fmt: skip
            directory.begin(config, resumed_at=state.round if resume else None)
            start = time.perf_counter()
            state = await self._rounds(lifecycle, engine, state, signals, history, port)
            await self._farewell_unless_stopped(runtime, signals)
            return ServeResult(state, history.records(), time.perf_counter() - start, port)
        finally:
            await runtime.close(timeout_s=FAREWELL_S)
            engine.close()
            lifecycle.close()

    async def _listen(self, runtime: GrpcRuntime, endpoint: Endpoint) -> int:
        service = CoordinatorService(runtime, self._authenticator, limiter=self._limiter)
        server = coordinator_server(runtime, service)
        port = listen(server, endpoint.address, endpoint.credentials)
        await server.start()
        if endpoint.port_file is not None:
            write_atomic(endpoint.port_file, f"{port}\n".encode())
        return port

    @staticmethod
    async def _rounds(
        lifecycle: RunLifecycle, engine: Engine, state: ServerState,
        signals: StopSignals | None, history: HistoryLog, port: int,
    ) -> ServerState:  # fmt: skip
        task = asyncio.current_task()
        if signals is not None and task is not None:
            signals.attach(task)
        start = time.perf_counter()
        try:
            return await lifecycle.run(engine.run_round, state)
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
