"""Aggregator speed: phalanx's robust aggregators against ByzFL's and Flower's versions of
the same rules, on the same inputs, in the same run.

    .venv/bin/python -m benchmarks.aggregator_speed          # peers: make bench-peers
    .venv/bin/python -m benchmarks.aggregator_speed --n 10 50 --d 100000 --only krum median

Every rule at n in {10, 50, 100} clients and d in {1e5, 1e6} parameters: CPU seconds per
call (median of interleaved rounds), each peer's time as a multiple of ours, and the
largest absolute difference between its output and ours on the same inputs, so that "the
same rule" is checked, not assumed. Prints a table and writes it to
docs/aggregator_speed.md and .json.

Two measuring children run side by side (``aggregators/child.py``): phalanx's rules in
this interpreter's environment, the peers' in ``.venv-peers`` (``make bench-peers``), so
neither environment holds the other's dependencies; the parent (``aggregators/driver.py``)
interleaves their calls, one at a time. Both start with OpenMP, MKL and OpenBLAS pinned to
one thread (they read that when numpy and torch load, so a child cannot set it for itself)
and call ``torch.set_num_threads(1)``: every contender gets one core. The table compares
CPU seconds (user + system) because the machine may be shared: wall seconds also count the
time other processes held the core, and are recorded next to them, with the load average.
Both children's glibc allocator keeps the memory it frees (``KEEP_FREED_MEMORY``): by
default every array above 32 MiB is a fresh ``mmap`` that the kernel must fault in and zero
on first touch, so a contender that allocates n x d temporaries on every call (ByzFL's
numpy geometric median: several per Weiszfeld step) is timed mostly on the host's page
zeroing, which varies several-fold between hosts (docs/aggregator_speed.md). The setting
only helps such contenders; each call's minor page faults and system time are recorded.
Without the peers' environment it times ours alone and says how to build it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.aggregators.driver import Bench, Worker, metadata_rules
from benchmarks.aggregators.peers import INSTALL_HINT
from benchmarks.aggregators.report import render, to_markdown
from benchmarks.aggregators.rules import tolerated
from benchmarks.common.measure import ONE_THREAD, REPO_ROOT, machine_info

# glibc: serve every allocation from the heap and never give freed memory back, so a
# temporary of the same size reuses pages already faulted in instead of a fresh mapping.
KEEP_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": str(2**34),
    "MALLOC_TRIM_THRESHOLD_": str(2**34),
    "MALLOC_TOP_PAD_": str(2**30),
}


PEERS_PYTHON = REPO_ROOT / ".venv-peers" / "bin" / "python"


def start_workers(args: argparse.Namespace) -> tuple[Worker, Worker | None, dict[str, str]]:
    """phalanx's child in this environment, the peers' in theirs (if it exists)."""
    env = {**os.environ, **ONE_THREAD, **({} if args.default_allocator else KEEP_FREED_MEMORY)}
    argv = ["-m", "benchmarks.aggregators.child", "--side"]
    timeout = max(5 * args.max_call_s, 120.0)
    ours = Worker([sys.executable, *argv, "ours"], env, REPO_ROOT, timeout)
    if not args.peers_python.exists():
        why = f"no {args.peers_python}; {INSTALL_HINT}"
        return ours, None, {"ByzFL": why, "Flower": why}
    # The peers' child must not see phalanx's source or environment on its path.
    peers_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    peers = Worker([str(args.peers_python), *argv, "peers"], peers_env, REPO_ROOT, timeout)
    return ours, peers, dict(peers.hello["missing"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen rule at every (n, d), both children side by side."""
    ours, peers, missing = start_workers(args)
    chosen = [r for r in metadata_rules() if not args.only or r.label in args.only]
    cases = []
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-speed-") as scratch:
            bench = Bench(ours, peers, missing, args, Path(scratch))
            for n in sorted(args.n):
                for d in sorted(args.d):
                    bench.load_case(n, d)
                    for rule in chosen:
                        print(f"  {rule.label} n={n} d={d:,}", file=sys.stderr, flush=True)
                        cases.append(bench.measure(rule, n, d, tolerated(n)))
    finally:
        ours.close()
        if peers is not None:
            peers.close()
    versions = dict(peers.hello["versions"]) if peers else {"ByzFL": None, "Flower": None}
    return {"cases": cases, "peers": versions, "missing": missing}


def dump(document: dict[str, Any]) -> str:
    """JSON with one line per contender: readable in a diff, a fraction of indent's size."""
    cases = [
        json.dumps({k: v for k, v in case.items() if k != "contenders"})[:-1]
        + ', "contenders": [\n'
        + ",\n".join("  " + json.dumps(c) for c in case["contenders"])
        + "]}"
        for case in document["cases"]
    ]
    rest = {k: v for k, v in document.items() if k != "cases"}
    return '{"cases": [\n' + ",\n".join(cases) + "],\n" + json.dumps(rest)[1:] + "\n"


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
    parser.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's mmap threshold alone (shows what page zeroing costs each rule)",
    )
    parser.add_argument("--from-json", type=Path, help="render a saved run, measure nothing")
    args = parser.parse_args()
    args.max_bytes = args.max_gib * 2**30
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log or a pipe: do not squeeze the table to 80
    if args.from_json:  # re-render a finished run (the tables, notes, markdown)
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        result, info = saved, saved.pop("machine")
    else:
        console.print(f"measuring in two child processes (one thread each): n={args.n}, d={args.d}")
        load_before = os.getloadavg()
        result = measure(args)
        info = machine_info(args.repeats) | {
            "allocator": "glibc default" if args.default_allocator else "freed memory kept",
            "load average (1, 5, 15 min) before": " ".join(f"{x:.1f}" for x in load_before),
            "after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        }
    render(console, result)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(to_markdown(result, info), encoding="utf-8")
    args.json.write_text(dump({**result, "machine": info}), encoding="utf-8")
    console.print(f"wrote {args.markdown} and {args.json}")


if __name__ == "__main__":
    main()
