"""Seed parity: phalanx against the seed program and plain-PyTorch loops, on one machine.

Run ``.venv/bin/python -m benchmarks.seed_parity`` from the repository root.

Each contender runs in its *own* subprocess, one after another, so that whole-process wall
time (interpreter start and imports included) and peak RSS belong to that contender alone:

- ``seed``: the tutorial program, extracted at run time into a temporary directory
  (see ``parity/seed_program.py``; its code is never written into the repository);
- ``phalanx (faults on)`` / ``(faults off)``: ``python -m phalanx run`` on the default
  scenario, which is the seed's scenario and failure mix;
- ``plain loop, client by client`` and ``plain loop, batched (floor)``:
  ``parity/plain_loops.py``;
- ``phalanx (faults on, with plots)`` and ``phalanx run (as typed)``: what drawing the two
  PNGs adds, and the default command as a user types it (plots, progress lines on a pipe),
  checked against the floor's whole-process time.

The parent measures wall time around ``Popen`` + ``os.wait4`` (which also yields the
child's ``ru_maxrss``; on Linux that is the peak of the child and of any descendants it
reaped, a maximum, not a sum). Training-only time and final accuracy are the child's own
report. Children run with ``OMP_NUM_THREADS=MKL_NUM_THREADS=1`` and pin torch to one
thread, so the comparison does not depend on how many cores the host happens to have.
The parent never imports torch: Linux counts the image a child was forked from in its
``ru_maxrss``, so a light parent (~20 MiB) keeps every child's peak its own.
A contender that fails (phalanx is built concurrently) is reported in its row; the script
itself carries on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from benchmarks.common.measure import REPO_ROOT, Measurement, machine_info, summarise
from benchmarks.parity.contenders import Contender, contenders, measure
from benchmarks.parity.report import checks, render, to_markdown
from benchmarks.parity.seed_program import SeedWorkspace, seed_workspace

# --- command -----------------------------------------------------------------------------


def open_seed(stack: contextlib.ExitStack, console: Console) -> SeedWorkspace | None:
    """Extract the seed for the duration of ``stack``; None (and a note) if it cannot be."""
    try:
        return stack.enter_context(seed_workspace(REPO_ROOT))
    except (OSError, RuntimeError) as exc:
        console.print(f"[yellow]seed unavailable: {exc}[/]")
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    keys = [c.key for c in contenders(None)]
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender (median)")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--markdown", type=Path, help="write the tables as markdown")
    parser.add_argument("--only", action="append", choices=keys, help="run only these (repeat)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child run")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless everything PASSes")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def run_all(
    chosen: list[Contender], repeats: int, timeout_s: float, console: Console
) -> dict[str, list[Measurement]]:
    """Every contender ``repeats`` times, interleaved so slow drift hits all rows alike."""
    runs: dict[str, list[Measurement]] = {c.key: [] for c in chosen}
    for rep in range(1, repeats + 1):
        for c in chosen:
            console.print(f"[dim]run {rep}/{repeats}: {c.label} ...[/]")
            runs[c.key].append(measure(c, timeout_s))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Piped output has no width; give the five columns room instead of wrapping at 80.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    wanted = set(args.only or [c.key for c in contenders(None)])
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        seed = open_seed(stack, console) if "seed" in wanted else None
        chosen = [c for c in contenders(seed) if c.key in wanted]
        runs = run_all(chosen, args.repeats, args.timeout, console)
    medians = {key: summarise(r) for key, r in runs.items()}
    rows = [(c.label, medians[c.key]) for c in chosen]
    verdicts = checks(medians)
    # The host may be shared: the load beside the numbers says how far to trust them.
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    info = {**machine_info(args.repeats), "load average (1 min)": load}
    render(console, rows, verdicts)
    console.print(f"load average (1 min): {load}", highlight=False)
    if args.json:
        payload = {
            "machine": info,
            "contenders": {
                c.key: {
                    "label": c.label,
                    "median": asdict(medians[c.key]),
                    "runs": [asdict(r) for r in runs[c.key]],
                }
                for c in chosen
            },
            "checks": [asdict(c) for c in verdicts],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(to_markdown(rows, verdicts, info), encoding="utf-8")
    clean = all(m.error is None for m in medians.values())
    return 0 if not args.strict or (clean and all(c.passed for c in verdicts)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
