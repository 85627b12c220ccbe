"""Update ingest over loopback: the coordinator's gRPC push path against raw TCP.

Run ``.venv/bin/python -m benchmarks.grpc_ingest`` from the repository root.

k client processes each push ``--updates`` updates of ``--floats`` float32 (10M: 40 MB) to
one receiver in this process, side by side in one run, alternating:

- ``raw TCP``: each client ``sendall``s the update's bytes on a plain socket; the receiver
  ``recv_into``s a preallocated buffer per update and does nothing else. The ceiling.
- ``gRPC push``: the coordinator's real path: ``phalanx.v1`` ``PushUpdate`` streamed in
  chunks by serde (the client serialises its update as a real client does), the grpc.aio
  servicer, chunk assembly with its order and size checks, and the sha256 digest check, into
  handlers that accept every update (the engine's validation is not part of ingest).

Clients are separate processes (no GIL shared with the receiver), started and made ready
(imports done, update built) before a "go" on their stdin; throughput is the bytes received
divided by the time from "go" to the last update received. One torch thread everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from benchmarks.common.measure import REPO_ROOT

HEADER = struct.Struct("!Q")  # raw TCP: the update's length, then its bytes


# -- clients (child processes) -----------------------------------------------------------


def _client(mode: str, port: int, client: int, updates: int, floats: int, chunk: int) -> None:
    import torch

    from phalanx.client.payload import Trained, seal
    from phalanx.core.messages import Envelope, ModelRef, TaskConfig, TaskKey, TrainTask
    from phalanx.runtime.grpc import serde
    from phalanx.runtime.grpc.assembly import raw_bytes
    from phalanx.runtime.grpc.session import Caller

    torch.set_num_threads(1)
    envelope = Envelope(run_id="ingest")
    ref = ModelRef(version=0, sha256="0" * 64)
    tensors = {"w": torch.randn(floats, generator=torch.Generator().manual_seed(client))}
    made = []
    for i in range(updates):
        key = TaskKey(round=i, client=client, attempt=0)
        task = TrainTask(envelope, key, ref, TaskConfig(1, 1, 0.1, ttl_s=60.0))
        made.append(seal(task, Trained(tensors, 1, 1, 1, {})))
    payload = raw_bytes(tensors)
    caller = Caller(envelope, client, "session")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_grpc_options())
    push: Any = channel.stream_unary(serde.method_path("PushUpdate"))
    print("ready", flush=True)
    sys.stdin.readline()  # go
    if mode == "tcp":
        for _ in range(updates):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(HEADER.pack(len(payload)))
                sock.sendall(payload)
                sock.recv(1)  # the receiver's ack: it has every byte
    else:
        for update in made:
            serde.parse_push_reply(push(serde.update_parts(caller, update, chunk), timeout=120))
    channel.close()


def _grpc_options() -> list[tuple[str, int]]:
    size = (4 << 20) + (64 << 10)
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]


# -- receivers (this process) -------------------------------------------------------------


@dataclass
class Received:
    count: int = 0
    total_bytes: int = 0
    last_at: float = 0.0


class TcpReceiver:
    def __init__(self) -> None:
        self.received = Received()
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._take, args=(conn,), daemon=True).start()

    def _take(self, conn: socket.socket) -> None:
        with conn:
            (size,) = HEADER.unpack(_read_exactly(conn, HEADER.size))
            buffer = memoryview(bytearray(size))
            got = 0
            while got < size:
                n = conn.recv_into(buffer[got:], size - got)
                if n == 0:
                    raise ConnectionError("raw TCP client hung up mid-update")
                got += n
            with self._lock:
                self.received.count += 1
                self.received.total_bytes += size
                self.received.last_at = time.perf_counter()
            conn.sendall(b"k")

    def close(self) -> None:
        self._sock.close()


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            raise ConnectionError("raw TCP client hung up")
        data += part
    return data


class AcceptAll:
    """Handlers that take every push whole (digest checked by the servicer) and drop it."""

    def __init__(self) -> None:
        self.received = Received()

    async def admit_update(self, caller: object, header: object) -> None:
        return None

    async def push_update(self, caller: object, update: object) -> object:
        from phalanx.runtime.grpc.session import PushReceipt

        tensors = update.tensors  # type: ignore[attr-defined]
        self.received.count += 1
        self.received.total_bytes += sum(t.numel() * 4 for t in tensors.values())
        self.received.last_at = time.perf_counter()
        return PushReceipt(update.envelope, update.key)  # type: ignore[attr-defined]

    def push_failed(self, caller: object, header: object, reason: str) -> None:
        raise RuntimeError(f"a benchmark push failed: {reason}")

    async def _refuse(self, *args: object) -> None:
        from phalanx.errors import ProtocolError

        raise ProtocolError("the ingest benchmark takes pushes only")

    join = heartbeat = pull_task = get_model = report_failure = leave = status = _refuse


class GrpcReceiver:
    def __init__(self) -> None:
        from phalanx.runtime.grpc.assembly import WireLimits
        from phalanx.runtime.grpc.servicer import build_server

        self.handlers = AcceptAll()
        self.received = self.handlers.received
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        holder: dict[str, int] = {}

        async def start() -> None:
            self._server = build_server(self.handlers, WireLimits())  # type: ignore[arg-type]
            holder["port"] = self._server.add_insecure_port("127.0.0.1:0")
            await self._server.start()
            ready.set()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the gRPC receiver did not start")
        self.port = holder["port"]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- one measurement ----------------------------------------------------------------------


def measure(mode: str, clients: int, updates: int, floats: int, chunk: int) -> float:
    """Bytes per second received, from "go" to the last update."""
    receiver: TcpReceiver | GrpcReceiver = TcpReceiver() if mode == "tcp" else GrpcReceiver()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=_path())
    argv = [sys.executable, "-m", "benchmarks.grpc_ingest", "--client", mode]
    procs = [
        subprocess.Popen(
            [
                *argv,
                "--port",
                str(receiver.port),
                "--id",
                str(i),
                "--updates",
                str(updates),
                "--floats",
                str(floats),
                "--chunk-bytes",
                str(chunk),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        for i in range(clients)
    ]
    try:
        for proc in procs:
            if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {mode} client failed to start")
        start = time.perf_counter()
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.write("go\n")
                proc.stdin.flush()
        for proc in procs:
            if proc.wait(timeout=600) != 0:
                raise RuntimeError(f"a {mode} client exited {proc.returncode}")
        expected = clients * updates
        if receiver.received.count != expected:
            raise RuntimeError(f"{mode}: {receiver.received.count} of {expected} updates arrived")
        return receiver.received.total_bytes / (receiver.received.last_at - start)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        receiver.close()


def _wire_chunk_bytes() -> int:
    from phalanx.runtime.grpc.assembly import WireLimits

    return WireLimits().chunk_bytes


def _path() -> str:
    src = str(REPO_ROOT / "src")
    return os.pathsep.join(p for p in (str(REPO_ROOT), src, os.environ.get("PYTHONPATH")) if p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--updates", type=int, default=10, help="updates per client")
    parser.add_argument("--floats", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-bytes", type=int, default=None,
        help="bytes per pushed chunk (default: WireLimits' chunk_bytes, what clients send)",
    )  # fmt: skip
    parser.add_argument("--client", choices=["tcp", "grpc"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    chunk = args.chunk_bytes or _wire_chunk_bytes()
    if args.client:
        _client(args.client, args.port, args.id, args.updates, args.floats, chunk)
        return
    import torch

    torch.set_num_threads(1)
    table = Table(title=f"update ingest over loopback ({args.floats:,} float32 per update)")
    for column in ("k clients", "raw TCP MB/s", "gRPC push MB/s", "gRPC / TCP"):
        table.add_column(column, justify="right")
    for k in args.clients:
        tcp, grpc_ = [], []
        for _ in range(args.repeats):  # alternating, so drifting load hits both alike
            tcp.append(measure("tcp", k, args.updates, args.floats, chunk))
            grpc_.append(measure("grpc", k, args.updates, args.floats, chunk))
        t, g = statistics.median(tcp), statistics.median(grpc_)
        table.add_row(str(k), f"{t / 1e6:,.0f}", f"{g / 1e6:,.0f}", f"{g / t:.2f}")
    Console().print(table)
    print(
        f"cpus: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}; medians of {args.repeats}; "
        f"chunks of {chunk:,} bytes"
    )


if __name__ == "__main__":
    main()
