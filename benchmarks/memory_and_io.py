"""Coordinator memory and checkpoint I/O, measured against what they are bounded by.

1. Aggregation memory: the engine collects N FedAvg updates of a D-parameter model (default
   1,000 x 10M) from a runtime that makes each update fresh, in its own process. Reported:
   the peak RSS of the round above the idle process (VmHWM after resetting it, minus VmRSS
   before), as a multiple of the model's size. Round 0 has no norm reference yet and holds
   ``validation.reference_updates`` updates back; round 1 streams every update on arrival.
   Children run with glibc's mmap threshold pinned (see CHILD_ENV), so RSS tracks live memory.
2. Checkpoint throughput: saving and loading a P-parameter model (default 100M) through the
   atomic, checksummed local store, as a ratio to a dd-style sequential write (1 MiB
   blocks + fsync) and read of the same number of bytes, measured in the same run.

    .venv/bin/python -m benchmarks.memory_and_io [--updates N] [--dim D] [--ckpt-params P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common.measure import ONE_THREAD, REPO_ROOT, last_json_line
from phalanx.checkpoint import LocalCheckpointStore
from phalanx.config import build_config
from phalanx.core.messages import ClientUpdate, Event, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest, payload_digest, unflatten
from phalanx.engine.clock import VirtualClock
from phalanx.engine.engine import Engine
from phalanx.engine.membership import Roster

MIB = 2**20
# Children run with one torch thread and glibc's mmap threshold fixed at 128 KiB: by default
# glibc raises it up to 32 MiB after the first large free, and then keeps freed 20 MiB
# tensors in its heap, so RSS would measure the allocator's retention, not live memory.
CHILD_ENV = {**os.environ, **ONE_THREAD, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


class FreshUpdates:
    """A runtime whose every reply is a newly allocated update: holding them would show."""

    def __init__(self, count: int, manifest: Manifest, models: ModelBook) -> None:
        self.clock = VirtualClock()
        self._count = count
        self._manifest = manifest
        self._models = models
        self._queue: list[TrainTask] = []

    def submit(self, task: TrainTask) -> None:
        self._queue.append(task)

    def cancel(self, key: TaskKey) -> None:
        self._queue = [t for t in self._queue if t.key != key]

    async def close(self, timeout_s: float = 10.0) -> None:
        self._queue.clear()

    async def next_event(self, until: float) -> Event | None:
        if not self._queue:
            self.clock.advance_to(until)
            return None
        task = self._queue.pop(0)
        self.clock.advance_to(min(until, self.clock.now() + 0.001))
        shift = 1e-3 * (1 + (task.key.client % 5) / 10)
        params = self._models.get(task.model).params
        tensors = {name: view + shift for name, view in unflatten(params, self._manifest).items()}
        return ClientUpdate(
            task.envelope, task.key, task.model, 1, 1, 10, tensors, payload_digest(tensors),
            sender=task.key.client,
        )  # fmt: skip


def fedavg_engine(updates: int, dim: int, reference_updates: int) -> tuple[Engine, ServerState]:
    shapes = {"w0": (dim // 2,), "w1": (dim - dim // 2,)}
    manifest = Manifest.of({n: torch.zeros(s) for n, s in shapes.items()})
    config = build_config(
        {
            "rounds": 2,
            "workload": {"name": "custom", "num_clients": updates},
            "selection": {"clients_per_round": updates, "over_selection": 1.0},
            "deadlines": {"task_s": 1e9, "round_s": 1e9},
            "validation": {
                "max_update_bytes": 8 * dim + 1024,
                "reference_updates": reference_updates,
            },
        }
    )
    models = ModelBook(manifest)
    engine = Engine(
        config, FreshUpdates(updates, manifest, models),
        membership=Roster(range(updates)), models=models,
    )  # fmt: skip
    return engine, engine.initial_state(torch.zeros(dim), manifest)


def aggregation_child(updates: int, dim: int, reference_updates: int) -> dict[str, Any]:
    """Two rounds of ``updates`` updates, after a throwaway round on a tiny model that pays
    the process's one-time costs (lazy imports, first-use allocations): "idle" is a process
    ready to aggregate, not one that has never run a round."""
    torch.set_num_threads(1)
    warm, warm_state = fedavg_engine(10, 1000, reference_updates)
    asyncio.run(warm.run_round(warm_state))
    engine, state = fedavg_engine(updates, dim, reference_updates)
    rounds = []
    for _ in range(2):
        idle = _status("VmRSS")
        _reset_peak()
        start = time.perf_counter()
        state, record = asyncio.run(engine.run_round(state))
        rounds.append(
            {
                "peak_above_idle": _status("VmHWM") - idle,
                "seconds": time.perf_counter() - start,
                "committed": record.committed,
                "accepted": len(record.accepted),
            }
        )
    return {"model_bytes": 4 * dim, "rounds": rounds}


def _dd(path: Path, size: int) -> tuple[float, float]:
    block = os.urandom(MIB)
    start = time.perf_counter()
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    with open(path, "rb") as source:
        while source.read(MIB):
            pass
    return write_s, time.perf_counter() - start


def checkpoint_io(params: int) -> dict[str, float]:
    torch.set_num_threads(1)
    vector = torch.randn(params)
    state = ServerState(0, 0, vector, Manifest.of({"w": vector}), {}).with_changes(round=1)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        dd_write, dd_read = _dd(root / "dd.bin", 4 * params)
        (root / "dd.bin").unlink()
        store = LocalCheckpointStore(root / "ckpt", keep=1)
        start = time.perf_counter()
        store.save(state)
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = store.latest_valid()
        load_s = time.perf_counter() - start
        if loaded is None or not torch.equal(loaded.params, vector):
            raise RuntimeError("the checkpoint did not load back bit-identical")
    return {"bytes": 4 * params, "dd_write_s": dd_write, "dd_read_s": dd_read,
            "save_s": save_s, "load_s": load_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=10_000_000)
    parser.add_argument("--ckpt-params", type=int, default=100_000_000)
    parser.add_argument("--child", choices=["aggregation", "checkpoint"])
    parser.add_argument("--reference-updates", type=int, default=5)
    args = parser.parse_args()
    if args.child == "aggregation":
        print(json.dumps(aggregation_child(args.updates, args.dim, args.reference_updates)))
        return
    if args.child == "checkpoint":
        print(json.dumps(checkpoint_io(args.ckpt_params)))
        return
    console = Console()
    runs = {}
    for key, child, extra in (
        ("aggregation", "aggregation", []),
        ("no-hold", "aggregation", ["--reference-updates=0"]),
        ("checkpoint", "checkpoint", []),
    ):
        console.print(f"running {key} ...")
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_and_io", "--child", child,
             f"--updates={args.updates}", f"--dim={args.dim}",
             f"--ckpt-params={args.ckpt_params}", *extra],
            capture_output=True, text=True, check=True, env=CHILD_ENV, cwd=REPO_ROOT,
        )  # fmt: skip
        runs[key] = last_json_line(done.stdout)
    io = runs["checkpoint"]
    model = runs["aggregation"]["model_bytes"]
    table = Table(title=f"FedAvg round: {args.updates} updates x {args.dim:,} params")
    for column in ("round", "peak RSS above idle", "x model size", "target", "seconds", "accepted"):
        table.add_column(column)
    labelled = [
        ("round 0, default (first 5 held back)", runs["aggregation"]["rounds"][0]),
        ("round 1, default (streaming)", runs["aggregation"]["rounds"][1]),
        ("round 0, reference_updates=0", runs["no-hold"]["rounds"][0]),
        ("round 1, reference_updates=0", runs["no-hold"]["rounds"][1]),
    ]
    for label, row in labelled:
        ratio = row["peak_above_idle"] / model
        table.add_row(
            label, f"{row['peak_above_idle'] / MIB:.0f} MiB", f"{ratio:.2f}x", "< 3x",
            f"{row['seconds']:.1f}", str(row["accepted"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"(holding the stack instead: {args.updates} x {args.dim:,} x 4 B = "
        f"{args.updates * model / 2**30:.1f} GiB)"
    )
    size = io["bytes"] / MIB
    io_table = Table(title=f"checkpoint of {args.ckpt_params:,} params ({size:.0f} MiB)")
    for column in ("operation", "seconds", "MiB/s", "dd-style baseline MiB/s", "ratio to dd"):
        io_table.add_column(column)
    rows = (
        ("save (atomic, sha256, fsync)", io["save_s"], io["dd_write_s"]),
        ("load (read, verify sha256)", io["load_s"], io["dd_read_s"]),
    )
    for name, ours, base in rows:
        io_table.add_row(name, f"{ours:.2f}", f"{size / ours:.0f}", f"{size / base:.0f}",
                         f"{base / ours:.2f}")  # fmt: skip
    console.print(io_table)


if __name__ == "__main__":
    main()
