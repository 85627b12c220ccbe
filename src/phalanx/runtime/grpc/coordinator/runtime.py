"""``GrpcRuntime``: the engine's Runtime port over gRPC, on the wall clock.

The runtime only moves messages. ``submit`` posts a task to its client's mailbox (the
client's long-poll takes it); ``cancel`` drops it (a client that took it hears so in its next
heartbeat reply); replies and failures that the coordinator's handlers receive wait in one
queue for ``next_event``. Who is live is the ``membership`` roster's: joins and leaves come
from the handlers, and a client silent past the patience leaves it (a sweep on the event
loop) after its tasks in flight have been failed at once, so the engine retries or replaces
them instead of waiting for their deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import grpc

from phalanx.core.messages import ClientUpdate, Envelope, Event, TaskFailure, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.engine.clock import WallClock
from phalanx.errors import RuntimeBackendError
from phalanx.runtime.grpc.coordinator.board import TaskBoard
from phalanx.runtime.grpc.coordinator.events import EventQueue, UploadSlots
from phalanx.runtime.grpc.coordinator.liveness import Liveness
from phalanx.runtime.grpc.coordinator.progress import RunProgress
from phalanx.runtime.grpc.coordinator.roster import ServedRoster
from phalanx.runtime.grpc.coordinator.settings import ServeSettings
from phalanx.types import ClientId, FailureKind

log = logging.getLogger("phalanx.runtime.grpc.coordinator")


class GrpcRuntime:
    def __init__(
        self, *, models: ModelBook, settings: ServeSettings | None = None, run_id: str = "",
        epoch: int = 0,
    ) -> None:  # fmt: skip
        self.clock = WallClock()
        self.models = models  # the engine publishes each round's model here
        self.settings = settings or ServeSettings()
        self.run_id = run_id
        self.epoch = epoch  # the fencing epoch stamped on every reply (0: no failover)
        self.membership = ServedRoster()
        self.progress = RunProgress()
        self.board = TaskBoard(self.clock)
        self.events = EventQueue(self.clock)
        self.uploads = UploadSlots(self.settings.max_uploads)
        self.liveness = Liveness(self.clock, self.settings.patience_s)
        self._leaving: set[ClientId] = set()  # silent: leave once their failures are taken
        self._watch: asyncio.Task[None] | None = None
        self._server: grpc.aio.Server | None = None
        self._closed = False

    @property
    def envelope(self) -> Envelope:
        return Envelope(run_id=self.run_id, epoch=self.epoch)

    def attach(self, server: grpc.aio.Server) -> None:
        """The server this runtime's handlers answer on: stopped by ``close``."""
        self._server = server

    # -- the Runtime port ---------------------------------------------------------------

    def submit(self, task: TrainTask) -> None:
        if self._closed:
            raise RuntimeBackendError("submit on a closed gRPC runtime")
        client = task.key.client
        if client in self._leaving or not self.membership.is_live(client):
            # silenced (its leave not yet applied) or gone: nobody would ever pull it
            self.events.put(
                TaskFailure(
                    task.key, FailureKind.CRASH, "the client is not connected", self.envelope
                )
            )
            return
        self.board.add(task)  # a key already posted changes nothing: idempotent

    def cancel(self, key: TaskKey) -> None:
        self.board.drop(key)
        if isinstance(self.events.drop(key), ClientUpdate):
            self.uploads.release(key)  # a push still streaming keeps its slot until it ends

    async def next_event(self, until: float) -> Event | None:
        self.start()
        event = await self.events.get(until)
        if isinstance(event, ClientUpdate):
            self.uploads.release(event.key)  # the engine holds it now
        return event

    async def close(self, timeout_s: float = 10.0) -> None:
        """Tell pollers the run is over, stop the sweep, stop the server (its calls in
        flight get ``timeout_s`` to finish, then are cancelled)."""
        self.board.finish()
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch
        server, self._server = self._server, None
        if server is not None:
            await asyncio.wait_for(server.stop(grace=timeout_s / 2), timeout_s)
        self.board.clear()
        self.events.clear()

    # -- what the handlers report ---------------------------------------------------------

    def start(self) -> None:
        """Start the silence sweep on the running loop (once)."""
        if self._watch is None and not self._closed:
            self._watch = asyncio.get_running_loop().create_task(self._sweep_forever())

    def joined(self, client: ClientId, declared_examples: int) -> None:
        """A client joined (again): it is live; tasks it had taken before died with its
        previous process and fail now."""
        self.start()
        self._leaving.discard(client)
        self.liveness.touch(client)
        for key in self.board.delivered_to(client):
            self._fail(key, FailureKind.CRASH, "the client joined again (it restarted)")
        log.info("client %s joined (%d examples)", client, declared_examples)
        self.membership.join(client, declared_examples)

    def seen(self, client: ClientId) -> None:
        """A sign of life from a joined client; one the sweep had given up on is back."""
        self.liveness.touch(client)
        self._leaving.discard(client)
        if not self.membership.is_live(client):
            self.membership.join(client)

    def left(self, client: ClientId) -> None:
        self.liveness.forget(client)
        self._leaving.discard(client)
        for key in self.board.keys_of(client):
            self._fail(key, FailureKind.CRASH, "the client left")
        self.board.forget(client)
        log.info("client %s left", client)
        self.membership.leave(client)

    def received(self, update: ClientUpdate) -> bool:
        """Queue an update that arrived whole; False if its task was cancelled or failed
        while it streamed (the update is dropped and its slot freed)."""
        if self.board.received(update.key) and self.events.put(update):
            return True
        self.uploads.release(update.key)
        return False

    def reported(self, failure: TaskFailure) -> None:
        if self.board.drop(failure.key) is not None:
            self.events.put(failure)

    # -- silence ------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = self.settings.sweep_s
        while not self._closed:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> None:
        """Fail the tasks of clients silent past the patience; take them off the live set
        once the engine has taken those failures (so it records why, not just a leave)."""
        for client, silence in self.liveness.silent():
            keys = self.board.keys_of(client)
            log.warning(
                "client %s silent for %.2f s (patience %.2f s): %d task(s) fail now",
                client, silence, self.settings.patience_s, len(keys),
            )  # fmt: skip
            detail = f"no sign of life for {silence:.2f} s (patience {self.settings.patience_s} s)"
            for key in keys:
                self._fail(key, FailureKind.CRASH, detail)
            self._leaving.add(client)
        for client in [c for c in self._leaving if not self.events.holds_client(c)]:
            self._leaving.discard(client)
            self.membership.leave(client)
        for key in self.board.expired(self.clock.now()):
            self.events.drop(key)

    def _fail(self, key: TaskKey, kind: FailureKind, detail: str) -> None:
        if self.board.drop(key) is not None:
            self.events.put(TaskFailure(key, kind, detail, self.envelope))
