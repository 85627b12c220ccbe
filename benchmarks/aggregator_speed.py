"""Aggregator speed: phalanx's robust aggregators against ByzFL's and Flower's versions of
the same rules, on the same inputs, in the same run.

    .venv/bin/python -m benchmarks.aggregator_speed          # peers: make bench-peers
    .venv/bin/python -m benchmarks.aggregator_speed --n 10 50 --d 100000 --only krum median

Every rule at n in {10, 50, 100} clients and d in {1e5, 1e6} parameters: seconds per call
(median of interleaved rounds), each peer's time as a multiple of ours, and the largest
absolute difference between its output and ours on the same inputs, so that "the same
rule" is checked, not assumed. Prints a table and writes it to docs/aggregator_speed.md
and .json. The measuring runs in a child process started with OpenMP, MKL and OpenBLAS
pinned to one thread (they read that when numpy and torch load, so the parent cannot set
it for itself) and ``torch.set_num_threads(1)``: every contender gets one core. The
parameter matching is described in ``aggregators/rules.py``; the measuring rules in
``aggregators/child.py``, the tables in ``aggregators/report.py``. Without the peers
installed it times ours alone and says how to install them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.aggregators.report import render, to_markdown
from benchmarks.common.measure import ONE_THREAD, REPO_ROOT, last_json_line, machine_info


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the child and return its JSON document."""
    argv = [sys.executable, "-m", "benchmarks.aggregators.child",
            "--n", *map(str, args.n), "--d", *map(str, args.d), "--only", *args.only,
            f"--repeats={args.repeats}", f"--budget-s={args.budget_s}",
            f"--max-call-s={args.max_call_s}", f"--max-bytes={args.max_gib * 2**30}",
            f"--seed={args.seed}"]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO_ROOT, env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE,
        text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the measuring child failed with exit code {done.returncode}")
    return last_json_line(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--d", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--only", nargs="+", default=[], metavar="RULE")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=8.0, help="timed seconds per call")
    parser.add_argument("--max-call-s", type=float, default=60.0)
    parser.add_argument("--max-gib", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=Path("docs/aggregator_speed.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/aggregator_speed.json"))
    parser.add_argument("--from-json", type=Path, help="render a saved run, measure nothing")
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log or a pipe: do not squeeze the table to 80
    if args.from_json:  # re-render a finished run (the tables, notes, markdown)
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        result, info = saved, saved.pop("machine")
    else:
        console.print(f"measuring in a child process (threads pinned to 1): n={args.n}, d={args.d}")
        result, info = measure(args), machine_info(args.repeats)
    render(console, result)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(to_markdown(result, info), encoding="utf-8")
    args.json.write_text(json.dumps({**result, "machine": info}, indent=1), encoding="utf-8")
    console.print(f"wrote {args.markdown} and {args.json}")


if __name__ == "__main__":
    main()
