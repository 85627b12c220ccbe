"""Where handing an update's validation and fold to the executor starts to pay: the time to
validate and fold one update inline (all of it blocks the event loop) against the same work
through ``Offloader`` (the loop is free meanwhile; the hand-off costs a thread switch each
way), for updates of 1 KiB to 16 MiB.

    python -m benchmarks.offload_threshold [--repeats 30]

``engine.offload.INLINE_BYTES`` is chosen from this table: below it the work takes about as
long as the hand-off, so running it inline blocks the loop for a fraction of a millisecond
and saves the switch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from phalanx.aggregation import FedAvg
from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, Envelope, ModelRef, TaskConfig, TaskKey, TrainTask
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.engine.offload import Offloader
from phalanx.engine.pool import UpdatePool
from phalanx.engine.validation import Accepted, validate_update

SIZES = [1 << p for p in range(10, 25, 2)]  # bytes: 1 KiB .. 16 MiB
CONFIG = ValidationConfig(max_update_bytes=1 << 30, max_relative_norm=None)


def validate_and_fold(
    update: ClientUpdate, task: TrainTask, params: torch.Tensor, pool: UpdatePool
) -> None:
    manifest = Manifest.of({"w": params})
    verdict = validate_update(update, task, params, manifest, CONFIG)
    if not isinstance(verdict, Accepted):
        raise RuntimeError(f"the benchmark's update was rejected: {verdict}")
    pool.add(verdict)


async def per_update_us(size: int, offloaders: list[Offloader], repeats: int) -> list[float]:
    """Median microseconds per update through each offloader, measured interleaved so that
    a busy machine disturbs them alike."""
    dim = size // 4
    params, tensors = torch.zeros(dim), {"w": torch.full((dim,), 0.01)}
    key, model = TaskKey(0, 1, 1), ModelRef(0, "")
    task = TrainTask(Envelope(), key, model, TaskConfig(1, 1, 0.1, 60.0))
    update = ClientUpdate(
        Envelope(), key, model, 1, 1, 1, tensors, payload_digest(tensors), sender=1
    )
    pool = UpdatePool(FedAvg(), CONFIG, dim=dim, budget_bytes=1 << 40)
    times: list[list[float]] = [[] for _ in offloaders]
    for _ in range(repeats):
        for offloader, into in zip(offloaders, times, strict=True):
            start = time.perf_counter()
            await offloader.cpu(size, validate_and_fold, update, task, params, pool)
            into.append(time.perf_counter() - start)
    return [1e6 * statistics.median(t) for t in times]


async def measure(repeats: int) -> None:
    inline, threaded = Offloader(enabled=False), Offloader(inline_bytes=0)
    print("| update bytes | inline us (loop blocked) | via executor us | hand-off us |")
    print("|---:|---:|---:|---:|")
    for size in SIZES:
        a, b = await per_update_us(size, [inline, threaded], repeats)
        print(f"| {size:,} | {a:,.0f} | {b:,.0f} | {b - a:,.0f} |")
    threaded.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    asyncio.run(measure(args.repeats))


if __name__ == "__main__":
    main()
