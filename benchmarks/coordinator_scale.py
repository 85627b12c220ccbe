"""Engine time per round against the registered population N and the clients per round k,
today's engine (main at BASELINE_COMMIT) and this tree's side by side, on a scripted twin.

    python -m benchmarks.coordinator_scale                       # the full grid
    python -m benchmarks.coordinator_scale --n 10000 100000 --k 1000 --rounds 3

Workload. N registered clients, k per round (over-selected 1.3x), a 16-float model, FedAvg.
Each attempt's fate is drawn from (round, client, attempt): 10% crash after 0.5 s (retried
with backoff), 5% drop after 0.5 s (retried), 5% silent (the 30 s task deadline fails it;
then a replacement); the rest reply after 1-3 s. Failures feed the health monitor, so
clients are sidelined, probed and readmitted over the rounds. No training runs: an update is
the global model plus a small offset.

How it measures. Each (engine, N, k) runs in its own process with one torch thread. The
engine runs ``warmup`` rounds (building the health table for N clients, first-use costs),
then ``rounds`` measured ones. *engine ms* is the round's wall time minus the time spent
inside the runtime's own methods (the twin's bookkeeping and update making), i.e. the
engine's share; *round ms* is the whole round. *engine CPU ms* is the round's process CPU
time minus the CPU time (``thread_time``) inside the runtime's methods: a busy machine
inflates wall time far more than CPU time. Medians over the measured rounds, and the
fastest round (on a shared machine, the least disturbed one); ``--repeat R`` runs every
cell once per repeat (baseline and new, and every k, side by side within a repeat) and
pools each cell's rounds; below the table, each k's engine time over the smallest k's, per
N, repeat by repeat (the ratio the k = 10,000 target is read from). The twin's own lists of what
was sent are emptied between rounds (the garbage collector would walk them on the engine's
time). An engine since ``engine.heap`` freezes the heap it set up on its own, once per
process; ``--gc-freeze`` makes every child call ``gc.freeze()`` after its warm-up, so a
baseline before that can be compared on the same footing.

Today's engine. ``git archive BASELINE_COMMIT src`` is extracted into a temporary
directory and the child runs with ``PYTHONPATH=<tmp>/src``, so ``import phalanx`` is that
commit's code. Its port differs (``client_ids``, ``declared_examples``, ``fault_log`` on the
runtime), so the child drives it through ``LegacyTwin``, the same script behind that older
port. This tree's engine runs on ``phalanx.testing.ScriptedRuntime``, and so does a
``--baseline`` commit that already has it (``--baseline c5c06cc``: before the per-update
work of issue 10 item 4). A baseline child that exceeds ``--baseline-timeout`` seconds is
reported as such.

Only the standard library is imported here, before a child knows which phalanx to load.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASELINE_COMMIT = "98aaf37"
ROOT = Path(__file__).resolve().parent.parent
DIM = 16
TASK_S = 30.0


def fate(round_index: int, client: int, attempt: int) -> tuple[str, float]:
    """(what the attempt does, after how many virtual seconds)."""
    digest = hashlib.blake2b(f"{round_index}/{client}/{attempt}".encode(), digest_size=8)
    u = int.from_bytes(digest.digest(), "little") / 2.0**64
    if u < 0.10:
        return "crash", 0.5
    if u < 0.15:
        return "drop", 0.5
    if u < 0.20:
        return "silent", 0.0
    return "reply", 1.0 + 2.0 * (u - 0.2) / 0.8


def config_tree(n: int, k: int) -> dict[str, Any]:
    return {
        "rounds": 10**6,
        "workload": {"name": "custom", "num_clients": n},
        "selection": {"clients_per_round": k, "over_selection": 1.3},
        "deadlines": {"task_s": TASK_S, "round_s": 120.0},
        "quorum": {"min_updates": 1},
        "validation": {"max_update_bytes": 1 << 20},
    }


class Timed:
    """Wraps a runtime, adding up the seconds (wall and CPU) spent inside its methods.

    The CPU clock (``thread_time``) is a system call per reading, about 1 us: some of that
    lands on each side, so the engine's CPU share is approximate to a few ms per round."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.cpu = 0.0

    def _start(self) -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def _stop(self, start: tuple[float, float]) -> None:
        self.seconds += time.perf_counter() - start[0]
        self.cpu += time.thread_time() - start[1]

    @property
    def clock(self) -> Any:
        return self.inner.clock

    def submit(self, task: Any) -> None:
        start = self._start()
        self.inner.submit(task)
        self._stop(start)

    def cancel(self, key: Any) -> None:
        start = self._start()
        self.inner.cancel(key)
        self._stop(start)

    async def next_event(self, until: float) -> Any:
        start = self._start()
        event = await self.inner.next_event(until)
        self._stop(start)
        return event

    async def close(self, timeout_s: float = 10.0) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:  # the old port's extra methods
        return getattr(self.inner, name)


def legacy_twin(n: int) -> Any:
    """The script behind the port of BASELINE_COMMIT (imports that commit's phalanx)."""
    import heapq
    import importlib

    # That commit's API, not this tree's: looked up at run time, so type-checking this file
    # against the current phalanx does not apply to it.
    messages: Any = importlib.import_module("phalanx.core.messages")
    ClientUpdate, TaskFailure = messages.ClientUpdate, messages.TaskFailure  # noqa: N806
    payload_digest: Any = importlib.import_module("phalanx.core.tensors").payload_digest
    from phalanx.engine.clock import VirtualClock
    from phalanx.types import FailureKind

    class LegacyTwin:
        def __init__(self) -> None:
            self.clock = VirtualClock()
            self._queue: list[tuple[float, int, Any]] = []
            self._pending: dict[Any, Any] = {}
            self._seq = 0

        def client_ids(self) -> list[int]:
            return list(range(n))

        def declared_examples(self, client: int) -> int | None:
            return 10**6

        def fault_log(self, round_index: int) -> list[dict[str, Any]]:
            return []

        def submit(self, task: Any) -> None:
            kind, after = fate(task.key.round, task.key.client, task.key.attempt)
            self._pending[task.key] = task
            if kind != "silent":
                self._seq += 1
                heapq.heappush(self._queue, (self.clock.now() + after, self._seq, task.key))

        def cancel(self, key: Any) -> None:
            self._pending.pop(key, None)

        async def close(self) -> None:
            self._pending.clear()

        async def next_event(self, until: float) -> Any:
            while self._queue and self._queue[0][0] <= until:
                when, _, key = heapq.heappop(self._queue)
                task = self._pending.pop(key, None)
                if task is None:
                    continue
                self.clock.advance_to(when)
                kind, _ = fate(key.round, key.client, key.attempt)
                if kind != "reply":
                    return TaskFailure(key, FailureKind(kind), "scripted")
                tensors = {"w": task.params + 0.01}
                return ClientUpdate(
                    key, task.model_version, tensors, 10, 1.0, payload_digest(tensors)
                )
            self.clock.advance_to(until)
            return None

    return LegacyTwin()


def current_twin(n: int) -> tuple[Any, Any]:
    from phalanx.testing import Reply, ScriptedRuntime
    from phalanx.types import FailureKind

    def script(key: Any) -> Reply:
        kind, after = fate(key.round, key.client, key.attempt)
        if kind == "silent":
            return Reply(silent=True)
        failure = None if kind == "reply" else FailureKind(kind)
        return Reply(after_s=after, fail=failure)

    import torch

    from phalanx.core.tensors import Manifest

    runtime = ScriptedRuntime(Manifest.of({"w": torch.zeros(DIM)}), n, script=script)
    return runtime, runtime.membership


def child(engine_kind: str, n: int, k: int, warmup: int, rounds: int, freeze: bool) -> Any:
    """Runs in its own process; ``import phalanx`` is the tree under test. A baseline
    older than the narrow port (no ``phalanx.testing``) is driven through ``LegacyTwin``."""
    import asyncio
    import importlib.util

    import torch

    from phalanx.config import build_config
    from phalanx.core.tensors import Manifest
    from phalanx.engine.engine import Engine

    torch.set_num_threads(1)
    config = build_config(config_tree(n, k))
    manifest = Manifest.of({"w": torch.zeros(DIM)})
    engine_class: Any = Engine  # the baseline's Engine takes the old port's arguments
    if engine_kind == "baseline" and importlib.util.find_spec("phalanx.testing") is None:
        runtime = Timed(legacy_twin(n))
        engine = engine_class(config, runtime)
    else:
        inner, membership = current_twin(n)
        runtime = Timed(inner)
        engine = engine_class(config, runtime, membership=membership, models=inner.models)
    state = engine.initial_state(torch.zeros(DIM), manifest)
    # One event loop for every round, as a coordinator runs: asyncio.run per round would
    # also time the repr of the finished task's result (the whole ServerState) that
    # asyncio builds while restoring the SIGINT handler.
    return asyncio.run(measure(engine, runtime, state, (warmup, rounds), freeze=freeze))


async def measure(
    engine: Any, runtime: Timed, state: Any, counts: tuple[int, int], *, freeze: bool
) -> Any:
    """Rows of the measured rounds; with ``freeze``, ``gc.freeze()`` after the warm-up, as a
    coordinator process may do once set up (full collections then skip what it built)."""
    warmup, rounds = counts
    rows = []
    for index in range(warmup + rounds):
        if freeze and index == warmup:
            gc.freeze()
        runtime.seconds = runtime.cpu = 0.0
        start, cpu = time.perf_counter(), time.process_time()
        result = await engine.run_round(state)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        # The record as JSON is the benchmark's own need: made after the clock stops (it
        # was inside the timed span before, costing a second ``to_json`` of the round).
        state, record = round_result(result)
        # The twin's record of what was sent (for tests) would grow by every task of every
        # round, and the garbage collector would walk it on the engine's time: emptied.
        for log in ("submitted", "cancelled"):
            getattr(runtime.inner, log, []).clear()
        if index >= warmup:
            rows.append(
                {
                    "round_s": wall,
                    "engine_s": wall - runtime.seconds,
                    "round_cpu_s": cpu,
                    "engine_cpu_s": cpu - runtime.cpu,
                    "accepted": len(record["accepted"]),
                    "dispatched": len(record["dispatched"]),
                    "retries": record["retries"],
                    "replacements": record["replacements"],
                    "failures": sum(record["failures"].values()),
                }
            )
    return {"rounds": rows}


def round_result(result: Any) -> tuple[Any, dict[str, Any]]:
    """(state, record as JSON) from ``run_round``: a state whose history holds the record
    (then emptied: it grows per round and is not ours to time), or a (state, record) pair."""
    if isinstance(result, tuple):
        state, record = result
        return state, record if isinstance(record, dict) else record.to_json()
    return result.with_changes(history=()), result.history[-1]


def run_child(engine_kind: str, n: int, k: int, args: argparse.Namespace, src: Path) -> Any:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable, __file__, "--child", engine_kind, str(n), str(k),
        str(args.warmup), str(args.rounds), str(int(args.gc_freeze)),
    ]  # fmt: skip
    limit = args.baseline_timeout if engine_kind == "baseline" else args.timeout
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        return f"> {limit:.0f} s"
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def pool(pair: dict[str, Any], kind: str, result: Any) -> None:
    """Add one child's measured rounds to ``pair[kind]`` (a failure or time-out replaces
    them: the cell then reports that)."""
    if isinstance(pair[kind], str):
        return
    if isinstance(result, str):
        pair[kind] = result
    else:
        pair[kind]["rounds"].extend(result["rounds"])


def extract_baseline(into: Path, commit: str) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def median_ms(result: Any, field: str) -> str:
    if isinstance(result, str):
        return result
    return f"{1000 * statistics.median(r[field] for r in result['rounds']):.1f}"


def best_ms(result: Any, field: str) -> str:
    """The fastest measured round: on a shared machine, the least disturbed one."""
    if isinstance(result, str):
        return ""
    return f"{1000 * min(r[field] for r in result['rounds']):.1f}"


def new_pair(with_baseline: bool) -> dict[str, Any]:
    return {"baseline": {"rounds": []} if with_baseline else "skipped", "current": {"rounds": []}}


def paired_k_ratios(medians: dict[tuple[int, int], list[float]]) -> list[str]:
    """Per N, each k's engine time over the smallest k's, repeat by repeat: the two children
    of a repeat ran minutes apart at most, so their ratio is what a machine whose speed
    drifts from minute to minute leaves least to chance (the ratio of the pooled medians
    in the table can pair a fast spell with a slow one)."""
    lines = []
    for n in sorted({n for n, _ in medians}):
        widths = sorted(k for m, k in medians if m == n)
        base = medians[n, widths[0]]
        for k in widths[1:]:
            ratios = [big / small for big, small in zip(medians[n, k], base, strict=False)]
            if not ratios:
                continue
            listed = ", ".join(f"{r:.1f}" for r in ratios)
            lines.append(
                f"- N = {n:,}: k = {k:,} over k = {widths[0]:,}, this tree's engine time, "
                f"repeat by repeat: {listed}x (median {statistics.median(ratios):.1f}x)"
            )
    return lines


def table(results: dict[tuple[int, int], dict[str, Any]]) -> str:
    lines = [
        "| k per round | N registered | today engine ms | new engine ms | ratio | "
        "today engine CPU ms | new engine CPU ms | today round CPU ms | new round CPU ms | "
        "today fastest engine CPU ms | new fastest engine CPU ms | "
        "retries | replacements | failures |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (n, k), pair in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        old, new = pair["baseline"], pair["current"]
        ratio = ""
        if not isinstance(old, str) and not isinstance(new, str):
            ratio = f"{float(median_ms(old, 'engine_s')) / float(median_ms(new, 'engine_s')):.1f}x"
        rows = [] if isinstance(new, str) else new["rounds"]
        stats = [f"{statistics.median(r[f] for r in rows):g}" if rows else "" for f in
                 ("retries", "replacements", "failures")]  # fmt: skip
        lines.append(
            f"| {k:,} | {n:,} | {median_ms(old, 'engine_s')} | {median_ms(new, 'engine_s')} | "
            f"{ratio} | {median_ms(old, 'engine_cpu_s')} | {median_ms(new, 'engine_cpu_s')} | "
            f"{median_ms(old, 'round_cpu_s')} | {median_ms(new, 'round_cpu_s')} | "
            f"{best_ms(old, 'engine_cpu_s')} | {best_ms(new, 'engine_cpu_s')} | "
            f"{stats[0]} | {stats[1]} | {stats[2]} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, n, k, warmup, rounds, freeze = sys.argv[2], *map(int, sys.argv[3:8])
        print(json.dumps(child(kind, n, k, warmup, rounds, bool(freeze))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per cell; a repeat runs every cell once"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--baseline-timeout", type=float, default=120.0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after warm-up")
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="the commit to compare with")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    results: dict[tuple[int, int], dict[str, Any]] = {}
    medians: dict[tuple[int, int], list[float]] = {}  # this tree's, one per child, in order
    with tempfile.TemporaryDirectory(prefix="phalanx-baseline-") as tmp:
        baseline_src = None if args.skip_baseline else extract_baseline(Path(tmp), args.baseline)
        # Repeats outermost: each repeat runs every cell once, so the cells of one repeat
        # (baseline beside new, and k beside k) share the machine's minute.
        for _ in range(args.repeat):
            for k in args.k:
                for n in args.n:
                    if n < 2 * k:
                        continue  # not enough clients for k per round with failures
                    pair = results.setdefault((n, k), new_pair(baseline_src is not None))
                    if baseline_src is not None:
                        pool(pair, "baseline", run_child("baseline", n, k, args, baseline_src))
                    result = run_child("current", n, k, args, ROOT / "src")
                    pool(pair, "current", result)
                    if not isinstance(result, str):
                        engine = statistics.median(r["engine_s"] for r in result["rounds"])
                        medians.setdefault((n, k), []).append(engine)
                    print(f"N={n:,} k={k:,}: {result}", file=sys.stderr, flush=True)
    text = table(results) + "\n\n" + "\n".join(paired_k_ratios(medians))
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
