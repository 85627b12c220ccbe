"""A small failover-following client driver for the HA tests and the failover benchmark::

    python -m phalanx.testing.failover.driver --targets A,B,C --clients 4

runs that many scripted clients in one process (real gRPC, no training: each answers with
the model plus a tiny delta) until the run is finished.

Each client follows the wire contract's client rules (docs/failover.md): it tries the
addresses in turn, follows a NotLeaderError's hint, sends the highest epoch it has seen,
ignores a reply whose epoch is lower (a deposed leader's; counted in ``stale_replies``),
re-joins after every switch, and drops a task of an older epoch. It is the test's own
driver, not ``phalanx client``; it prints one JSON line of counts at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field

import grpc

from phalanx.core.messages import ClientUpdate, Envelope, TrainTask
from phalanx.core.tensors import payload_digest
from phalanx.errors import NotLeaderError, PhalanxError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.errors import error_of_rpc
from phalanx.runtime.grpc.session import Caller, JoinRequest, PullStatus
from phalanx.runtime.grpc.streams import ModelReceiver
from phalanx.types import ClientId

CALL_TIMEOUT_S = 3.0
PULL_TIMEOUT_S = 8.0
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


class DeposedError(Exception):
    """A reply carried an epoch lower than one already seen."""


@dataclass
class Counts:
    switches: int = 0
    stale_replies: int = 0
    pushed: int = 0
    refused: int = 0
    epochs: set[int] = field(default_factory=set)
    finished: int = 0


class Follower:
    def __init__(
        self, targets: list[str], client: ClientId, counts: Counts, delay_s: float = 0.0
    ) -> None:
        self.targets = targets
        self.delay_s = delay_s
        self.client = client
        self.counts = counts
        self.seen = 0  # the highest epoch seen
        self.index = client % len(targets)
        self.hint = ""
        self.channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, target: str) -> grpc.aio.Channel:
        if target not in self.channels:
            # gRPC's reconnect backoff (1 s, doubling) would keep a coordinator that was
            # killed and restarted unreachable for seconds after it came back and won
            self.channels[target] = grpc.aio.insecure_channel(target, options=RECONNECT)
        return self.channels[target]

    async def call(self, target: str, method: str, data: bytes, timeout: float) -> bytes:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        unary = self.channel(target).unary_unary(serde.method_path(method))
        try:
            reply: bytes = await unary(data, timeout=timeout)
        except grpc.RpcError as error:
            raise error_of_rpc(error) from None
        return reply

    def fresh(self, epoch: int) -> None:
        if epoch < self.seen:
            self.counts.stale_replies += 1
            raise DeposedError(f"reply from epoch {epoch} < {self.seen}")
        self.seen = epoch
        self.counts.epochs.add(epoch)

    async def run(self, deadline: float) -> bool:
        for _ in range(100_000):
            if time.monotonic() > deadline:
                return False
            target = self.hint or self.targets[self.index % len(self.targets)]
            self.hint = ""
            try:
                await self.session(target)
                self.counts.finished += 1
                return True
            except NotLeaderError as exc:
                self.hint = exc.leader if exc.leader != target else ""
                if not self.hint:
                    self.index += 1
            except (PhalanxError, DeposedError):
                self.index += 1
            self.counts.switches += 1
            await asyncio.sleep(random.uniform(0.02, 0.15))
        return False

    async def session(self, target: str) -> None:
        request = JoinRequest(Envelope(epoch=self.seen), self.client, "secret", 10)
        reply = await self.call(target, "Join", serde.join_request(request), CALL_TIMEOUT_S)
        lease = serde.parse_lease_reply(reply)
        self.fresh(lease.envelope.epoch)
        caller = Caller(Envelope(epoch=self.seen), self.client, lease.session)
        beat = asyncio.create_task(self.beat(target, caller, lease.heartbeat_interval_s))
        try:
            await self.work(target, caller)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, PhalanxError, DeposedError):
                await beat

    async def beat(self, target: str, caller: Caller, interval: float) -> None:
        while True:
            await self.call(target, "Heartbeat", serde.heartbeat_request(caller), CALL_TIMEOUT_S)
            await asyncio.sleep(interval)

    async def work(self, target: str, caller: Caller) -> None:
        for _ in range(1_000_000):
            data = await self.call(target, "PullTask", serde.pull_request(caller), PULL_TIMEOUT_S)
            pulled = serde.parse_pull_reply(data)
            self.fresh(pulled.envelope.epoch)
            if pulled.status is PullStatus.FINISHED:
                return
            if pulled.task is not None and pulled.task.envelope.epoch >= self.seen:
                await self.answer(target, caller, pulled.task)

    async def answer(self, target: str, caller: Caller, task: TrainTask) -> None:
        await asyncio.sleep(self.delay_s)  # "training"
        stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
        stream = self.channel(target).unary_stream(serde.method_path("GetModel"))
        receiver = ModelReceiver(task.model, WireLimits())
        try:
            async for part in stream(serde.get_model_request(caller, task.model)):
                receiver.add(part)
        except grpc.RpcError as error:
            raise error_of_rpc(error) from None
        tensors = {name: value + 0.01 for name, value in receiver.finish().items()}
        update = ClientUpdate(
            task.envelope, task.key, task.model, steps_done=4, steps_planned=4,
            num_examples=10, tensors=tensors, digest=payload_digest(tensors),
        )  # fmt: skip
        parts = serde.update_parts(caller, update, WireLimits().chunk_bytes)
        push: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
        push = self.channel(target).stream_unary(serde.method_path("PushUpdate"))
        try:
            await push(parts, timeout=CALL_TIMEOUT_S)
            self.counts.pushed += 1
        except grpc.RpcError as error:
            refusal = error_of_rpc(error)
            if isinstance(refusal, NotLeaderError):
                raise refusal from None
            self.counts.refused += 1

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def main(targets: list[str], clients: int, deadline_s: float, delay_s: float) -> int:
    counts = Counts()
    followers = [Follower(targets, ClientId(i), counts, delay_s) for i in range(clients)]
    deadline = time.monotonic() + deadline_s
    try:
        done = await asyncio.gather(*(f.run(deadline) for f in followers))
    finally:
        for follower in followers:
            await follower.close()
    summary = {**counts.__dict__, "epochs": sorted(counts.epochs), "all_finished": all(done)}
    print(json.dumps(summary), flush=True)
    return 0 if all(done) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--delay-s", type=float, default=0.0, help="each answer's wait")
    args = parser.parse_args()
    targets = args.targets.split(",")
    sys.exit(asyncio.run(main(targets, args.clients, args.deadline_s, args.delay_s)))
