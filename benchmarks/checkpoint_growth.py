"""Checkpoint size, save time and bytes written as a run grows longer.

Runs the seed scenario with a checkpoint after every round (``checkpoint.every=1``) and
reports the checkpoint's size, encode time (CPU: JSON, safetensors, sha256) and save time
(encode plus the fsynced write, so it varies with the disk's load) at round 10 and at the
last round, and every byte the process wrote over the run (``wchar`` of /proc/self/io:
checkpoints, temporary files, the history log). A server state that carried the whole
history grew with the round number, so its I/O grew as rounds squared; the checkpoint must
stay the same size.

    .venv/bin/python -m benchmarks.checkpoint_growth --rounds 3000
    .venv/bin/python -m benchmarks.checkpoint_growth --baseline-src /tmp/base/src

``--baseline-src`` runs the same measurement, side by side, on another checkout's ``src``
(e.g. the commit before history left the checkpoint) and prints the ratios. Each
measurement is a child process (``-m benchmarks.checkpoint_growth --child``, run from the
repository root) whose ``PYTHONPATH`` names the ``src`` it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common.measure import ONE_THREAD, REPO_ROOT, last_json_line

EARLY = 10


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def measure(rounds: int) -> dict[str, Any]:
    """One run in this process; works on any phalanx with ``Simulation.run(on_round=...)``."""
    import torch

    from phalanx.checkpoint import LocalCheckpointStore
    from phalanx.checkpoint.format import encode
    from phalanx.config import build_config
    from phalanx.scenarios import scenario_path
    from phalanx.simulation import Simulation

    torch.set_num_threads(1)
    import tomllib

    base = tomllib.loads(scenario_path("seed").read_text())
    config = build_config(base, [f"rounds={rounds}", "checkpoint.every=1", "checkpoint.keep=3"])
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = LocalCheckpointStore(Path(tmp) / "scratch", keep=1)

        def probe(state: Any, record: Any) -> None:
            if state.round in (EARLY, rounds):
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    scratch.save(state)
                    times.append(time.perf_counter() - start)
                encodes = []
                for _ in range(5):
                    start = time.perf_counter()
                    size = sum(len(data) for data in encode(state).values())
                    encodes.append(time.perf_counter() - start)
                found[f"encode_s_{state.round}"] = statistics.median(encodes)
                found[f"size_{state.round}"] = size
                found[f"save_s_{state.round}"] = statistics.median(times)

        before, start = _wchar(), time.perf_counter()
        Simulation(config).run(checkpoint_dir=Path(tmp) / "run", on_round=[probe])
        probes = 5 * (found[f"size_{EARLY}"] + found[f"size_{rounds}"])  # the probe's own saves
        found["bytes_written"] = _wchar() - before - probes
        found["wall_s"] = time.perf_counter() - start
    return found


def run_child(src: Path, rounds: int) -> dict[str, Any]:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.checkpoint_growth", "--child", "--rounds", str(rounds)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"measurement with {src} failed:\n{done.stderr[-3000:]}")
    return last_json_line(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return
    here = REPO_ROOT / "src"
    columns = {"this tree": run_child(here, args.rounds)}
    if args.baseline_src is not None:
        columns["baseline"] = run_child(args.baseline_src, args.rounds)
    print_table(columns, args.rounds)


def print_table(columns: dict[str, dict[str, Any]], rounds: int) -> None:
    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[str, str, str, float]] = [  # label, key, format, scale
        (f"checkpoint bytes at round {EARLY}", f"size_{EARLY}", "{:,.0f}", 1),
        (f"checkpoint bytes at round {rounds}", f"size_{rounds}", "{:,.0f}", 1),
        (f"encode time at round {EARLY} (ms)", f"encode_s_{EARLY}", "{:.3g}", 1000),
        (f"encode time at round {rounds} (ms)", f"encode_s_{rounds}", "{:.3g}", 1000),
        (f"save time at round {EARLY} (ms)", f"save_s_{EARLY}", "{:.3g}", 1000),
        (f"save time at round {rounds} (ms)", f"save_s_{rounds}", "{:.3g}", 1000),
        (f"bytes written over {rounds} rounds", "bytes_written", "{:,.0f}", 1),
        ("wall time of the run (s)", "wall_s", "{:.1f}", 1),
    ]
    table = Table(title=f"seed scenario, checkpoint.every=1, {rounds} rounds")
    table.add_column("measure")
    for name in columns:
        table.add_column(name, justify="right")
    if "baseline" in columns:
        table.add_column("this tree / baseline", justify="right")
    for label, key, fmt, factor in rows:
        cells = [fmt.format(col[key] * factor) for col in columns.values()]
        if "baseline" in columns:
            cells.append(f"{columns['this tree'][key] / columns['baseline'][key]:.3f}")
        table.add_row(label, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
