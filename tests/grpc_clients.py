"""Scripted ``phalanx.v1`` clients for tests and benchmarks: real gRPC over loopback, serde's
request encoders on a ``grpc.aio`` channel, no training.

A ``ScriptedClient`` joins, sends heartbeats, long-polls for tasks and answers each as its
``script`` says: after a delay, with the model plus ``delta`` on every weight (a no-op
trainer's tiny delta), possibly twice (a duplicate the coordinator must absorb), or by
reporting a failure, or never. It is not the client agent (``phalanx client``): it exists to
drive a coordinator exactly, and ``python -m tests.grpc_clients`` runs one as a process a
test can SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import torch

from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskFailure, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.core.tensors import payload_digest
from phalanx.errors import AuthError, PhalanxError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.coordinator import (
    CoordinatorService,
    GrpcRuntime,
    ServeSettings,
    coordinator_server,
    listen,
)
from phalanx.runtime.grpc.errors import error_of_rpc
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease, PullStatus
from phalanx.runtime.grpc.streams import ModelReceiver
from phalanx.types import ClientId, FailureKind

CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Answer:
    """How a scripted client answers one task."""

    after_s: float = 0.0
    delta: float = 0.01
    duplicate: bool = False  # push the same update twice
    fail: FailureKind | None = None  # report this failure instead of an update
    silent: bool = False  # never answer


Script = Callable[[TaskKey], Answer]


@dataclass
class ClientLog:
    """What a client saw: a test asserts on it."""

    tasks: list[TaskKey] = field(default_factory=list)
    pushed: list[TaskKey] = field(default_factory=list)
    refused: list[tuple[TaskKey, PhalanxError]] = field(default_factory=list)
    cancelled: set[TaskKey] = field(default_factory=set)
    models_fetched: int = 0
    finished: bool = False


class ScriptedClient:
    def __init__(
        self, target: str, client: ClientId, *, script: Script | None = None,
        credential: str = "secret", examples: int = 10, heartbeats: bool = True,
        tls: grpc.ChannelCredentials | None = None,
    ) -> None:  # fmt: skip
        self.target = target
        self.client = client
        self.script = script or (lambda key: Answer())
        self.credential = credential
        self.examples = examples
        self.heartbeats = heartbeats
        self.tls = tls
        self.log = ClientLog()
        self.lease: Lease | None = None
        self._channel: grpc.aio.Channel | None = None  # made on the loop that uses it
        self._models: dict[ModelRef, dict[str, torch.Tensor]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def caller(self) -> Caller:
        if self.lease is None:
            raise RuntimeError("join first")
        return Caller(Envelope(), self.client, self.lease.session)

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = (
                grpc.aio.secure_channel(self.target, self.tls)
                if self.tls is not None
                else grpc.aio.insecure_channel(self.target)
            )
        return self._channel

    async def call(self, method: str, data: bytes) -> bytes:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        unary = self.channel.unary_unary(serde.method_path(method))
        try:
            answer = await unary(data, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            raise error_of_rpc(error) from None
        return answer

    async def join(self) -> Lease:
        request = JoinRequest(Envelope(), self.client, self.credential, self.examples)
        self.lease = serde.parse_lease_reply(await self.call("Join", serde.join_request(request)))
        return self.lease

    def start(self) -> None:
        """Heartbeats and the pull loop, in the background (after ``join``)."""
        loop = asyncio.get_running_loop()
        if self.heartbeats:
            self._tasks.append(loop.create_task(self._beat()))
        self._tasks.append(loop.create_task(self._work()))

    async def run(self) -> None:
        """Join, then work until the coordinator says the run is finished."""
        await self.join()
        self.start()
        await self.done()

    async def done(self) -> None:
        """Wait until the run is finished (then leave), or the pull loop fails (then stop,
        and raise what failed)."""
        work = self._tasks[1 if self.heartbeats else 0]
        try:
            await work
        finally:
            await self.stop(leave=self.log.finished)

    async def stop(self, *, leave: bool = False) -> None:
        """Stop (as a crash would, unless ``leave``: then say goodbye first)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, PhalanxError):
                await task
        self._tasks.clear()
        if leave and self.lease is not None:
            await self.call("Leave", serde.leave_request(self.caller, "done"))
        if self._channel is not None:
            await self._channel.close()

    async def _beat(self) -> None:
        interval = self.lease.heartbeat_interval_s if self.lease else 1.0
        while True:
            reply = await self.call("Heartbeat", serde.heartbeat_request(self.caller))
            self.log.cancelled.update(serde.parse_heartbeat_reply(reply).cancelled)
            await asyncio.sleep(interval)

    async def _work(self) -> None:
        while True:
            pulled = serde.parse_pull_reply(
                await self.call("PullTask", serde.pull_request(self.caller))
            )
            if pulled.status is PullStatus.FINISHED:
                self.log.finished = True
                return
            if pulled.task is not None:
                self._tasks.append(
                    asyncio.get_running_loop().create_task(self._answer(pulled.task))
                )

    async def _answer(self, task: TrainTask) -> None:
        self.log.tasks.append(task.key)
        answer = self.script(task.key)
        if answer.silent:
            return
        await asyncio.sleep(answer.after_s)
        if task.key in self.log.cancelled:
            return
        if answer.fail is not None:
            failure = TaskFailure(task.key, answer.fail, "scripted")
            await self.call("ReportFailure", serde.report_failure_request(self.caller, failure))
            return
        model = await self.model(task.model)
        tensors = {name: value + answer.delta for name, value in model.items()}
        update = ClientUpdate(
            task.envelope, task.key, task.model, steps_done=4, steps_planned=4,
            num_examples=self.examples, tensors=tensors, digest=payload_digest(tensors),
        )  # fmt: skip
        for _ in range(2 if answer.duplicate else 1):
            await self.push(update)

    async def model(self, ref: ModelRef) -> dict[str, torch.Tensor]:
        if ref not in self._models:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
            stream = self.channel.unary_stream(serde.method_path("GetModel"))
            receiver = ModelReceiver(ref, WireLimits())
            try:
                async for part in stream(serde.get_model_request(self.caller, ref)):
                    receiver.add(part)
            except grpc.RpcError as error:
                raise error_of_rpc(error) from None
            self._models = {ref: receiver.finish()}  # one version is enough here
            self.log.models_fetched += 1
        return self._models[ref]

    async def push(self, update: ClientUpdate) -> None:
        """Push ``update``; a refusal is logged, not raised (a client never resends it)."""
        parts = serde.update_parts(self.caller, update, WireLimits().chunk_bytes)
        push: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
        push = self.channel.stream_unary(serde.method_path("PushUpdate"))
        try:
            await push(parts, timeout=CALL_TIMEOUT_S)
            self.log.pushed.append(update.key)
        except grpc.RpcError as error:
            self.log.refused.append((update.key, error_of_rpc(error)))


class TokenBook:
    """A dict-backed ``Authenticator`` for tests: client id -> credential."""

    def __init__(self, tokens: dict[ClientId, str]) -> None:
        self._tokens = tokens

    def verify(self, client: ClientId, credential: str) -> None:
        if self._tokens.get(client) != credential:
            raise AuthError(f"client {client}: credential not accepted")


@dataclass
class LocalCoordinator:
    """A coordinator's transport in this process, serving on a loopback ephemeral port."""

    runtime: GrpcRuntime
    service: CoordinatorService
    target: str


async def serve_locally(
    models: ModelBook, settings: ServeSettings, clients: range, *, run_id: str = ""
) -> LocalCoordinator:
    """Start a ``GrpcRuntime`` and its server; clients in ``clients`` hold credential
    ``secret``. ``runtime.close()`` stops it all."""
    runtime = GrpcRuntime(models=models, settings=settings, run_id=run_id)
    service = CoordinatorService(runtime, TokenBook({c: "secret" for c in clients}))
    server = coordinator_server(runtime, service)
    port = listen(server, "127.0.0.1:0")
    await server.start()
    return LocalCoordinator(runtime, service, f"127.0.0.1:{port}")


async def _main(target: str, client: ClientId, after_s: float) -> None:
    """One scripted client as a process: it says on stdout when it joined and which tasks
    it took, so a test knows when to kill it."""
    torch.set_num_threads(1)

    def script(key: TaskKey) -> Answer:
        print(f"task {key.round} {key.attempt}", flush=True)
        return Answer(after_s=after_s)

    scripted = ScriptedClient(target, client, script=script)
    await scripted.join()
    print("joined", flush=True)
    scripted.start()
    await scripted.done()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--after-s", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(_main(args.target, args.id, args.after_s))
