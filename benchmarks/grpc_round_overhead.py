"""Coordinator round overhead over gRPC: 20 scripted no-op clients on loopback, the engine's
round time with the gRPC runtime against the same engine on the in-memory twin.

    python -m benchmarks.grpc_round_overhead                 # 20 clients, 30 rounds
    python -m benchmarks.grpc_round_overhead --clients 50 --rounds 50 --dim 100000

What runs. One coordinator (this process, one torch thread): ``GrpcRuntime`` and its server
on 127.0.0.1, the engine with FedAvg, every client selected every round (no
over-selection), no evaluation, no checkpoint. The clients are ``tests.grpc_clients``
scripted clients in one child process on their own event loop: each pulls its task, fetches
the round's model (a new version every round), adds 0.01 to every weight and pushes the
update at once (a no-op trainer). A round is measured from ``Engine.run_round``'s call to
its return: dispatch, the long-polls answering, the model downloads, the pushes streaming
in, validation, aggregation, the commit gate. The baseline is the same engine and config on
``phalanx.testing.ScriptedRuntime`` replying at virtual time 0: the engine's own share; the
difference is what the gRPC transport adds per round (target: at most 50 ms per round for
20 clients).

The model is a flat ``--dim``-float vector (default 2,826: the seed scenario's MLP 32-64-10).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch

from phalanx.config import RunConfig, build_config
from phalanx.core.models import ModelBook
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.engine.engine import Engine
from phalanx.engine.membership import Membership
from phalanx.engine.ports import Runtime
from phalanx.runtime.grpc.coordinator import (
    AnyCredential,
    CoordinatorService,
    GrpcRuntime,
    ServeSettings,
    coordinator_server,
    listen,
)
from phalanx.testing import Reply, ScriptedRuntime

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0
JOIN_TIMEOUT_S = 120.0


def scenario(clients: int) -> RunConfig:
    tree = {
        "workload": {"name": "custom", "num_clients": clients},
        "validation": {"reference_updates": 0},
        "selection": {"clients_per_round": clients, "over_selection": 1.0},
        "quorum": {"min_updates": clients},
        "rounds": 10_000,
    }
    return build_config(tree, [])


async def measure(
    config: RunConfig, runtime: Runtime, membership: Membership, models: ModelBook,
    manifest: Manifest, warmup: int, rounds: int,
) -> list[float]:  # fmt: skip
    """Milliseconds per measured round; every round must commit."""
    engine = Engine(config, runtime, membership=membership, models=models)
    state: ServerState = engine.initial_state(torch.zeros(manifest.dim), manifest)
    times = []
    try:
        for index in range(warmup + rounds):
            start = time.perf_counter()
            state, record = await engine.run_round(state)
            elapsed = (time.perf_counter() - start) * 1000
            if not record.committed:
                raise SystemExit(f"round {index} was discarded: {record.reasons}")
            if index >= warmup:
                times.append(elapsed)
    finally:
        engine.close()
    return times


async def over_grpc(
    config: RunConfig, manifest: Manifest, clients: int, warmup: int, rounds: int
) -> list[float]:
    models = ModelBook(manifest)
    settings = ServeSettings(heartbeat_s=1.0, patience_s=10.0, pull_wait_s=5.0, max_uploads=clients)
    runtime = GrpcRuntime(models=models, settings=settings)
    server = coordinator_server(runtime, CoordinatorService(runtime, AnyCredential()))
    port = listen(server, "127.0.0.1:0")
    await server.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.grpc_round_overhead", "--serve-clients",
        f"127.0.0.1:{port}", "--clients", str(clients), cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        await runtime.membership.wait_for(clients, JOIN_TIMEOUT_S)
        if runtime.membership.live_count() < clients:
            raise SystemExit(f"only {runtime.membership.live_count()} of {clients} clients joined")
        return await measure(config, runtime, runtime.membership, models, manifest, warmup, rounds)
    finally:
        await runtime.close(timeout_s=5.0)  # the clients hear FINISHED (or lose the server)
        try:
            await asyncio.wait_for(child.wait(), 30)
        except TimeoutError:
            child.kill()
            await child.wait()


async def on_twin(
    config: RunConfig, manifest: Manifest, clients: int, warmup: int, rounds: int
) -> list[float]:
    models = ModelBook(manifest)
    runtime = ScriptedRuntime(
        manifest, clients, script=lambda key: Reply(after_s=0.0), models=models
    )
    return await measure(config, runtime, runtime.membership, models, manifest, warmup, rounds)


async def serve_clients(target: str, clients: int) -> None:
    """The child: ``clients`` scripted no-op clients until the coordinator finishes."""
    from tests.grpc_clients import Answer, ScriptedClient

    scripted = [ScriptedClient(target, c, script=lambda key: Answer()) for c in range(clients)]
    await asyncio.gather(*(c.run() for c in scripted), return_exceptions=True)


def row(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    median, mean = statistics.median(times), statistics.mean(times)
    return f"| {name:<24} | {median:9.1f} | {p90:9.1f} | {mean:9.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dim", type=int, default=2826)
    parser.add_argument("--serve-clients", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.serve_clients:
        asyncio.run(serve_clients(args.serve_clients, args.clients))
        return
    config = scenario(args.clients)
    manifest = Manifest.of({"w": torch.zeros(args.dim)})
    run: Callable[..., Awaitable[list[float]]]
    results = {}
    for name, run in (("twin (engine only)", on_twin), ("gRPC, loopback", over_grpc)):
        results[name] = asyncio.run(run(config, manifest, args.clients, args.warmup, args.rounds))
    twin, grpc = (statistics.median(t) for t in results.values())
    print(
        f"{args.clients} clients per round, model {args.dim} floats, {args.rounds} rounds "
        f"after {args.warmup} warm-up; ms per round"
    )
    print("| runtime                  |    median |       p90 |      mean |")
    print("| ------------------------ | --------: | --------: | --------: |")
    for name, times in results.items():
        print(row(name, times))
    verdict = "meets" if grpc <= TARGET_MS else "misses"
    print(
        f"\ngRPC round: {grpc:.1f} ms median ({grpc / twin:.1f}x the engine alone; transport "
        f"adds {grpc - twin:.1f} ms); {verdict} the {TARGET_MS:.0f} ms target"
    )


if __name__ == "__main__":
    main()
