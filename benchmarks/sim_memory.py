"""Simulation memory against the round's width: peak RSS at 10 and at 200 clients per round.

The seed workload with a 3.3 MB model (MLP 32-19200-10: 43 x 19,200 + 10 = 825,610
float32 parameters), 260 clients, a few rounds of the seed scenario's faults. Each run is
``phalanx run seed`` in its own process with one torch thread; its peak RSS comes from
``os.wait4``. A round's trained updates wait in the simulation until delivered, so what
bounds a batch of them bounds the memory: ``simulation.max_batch_bytes`` (default) against
no bound at all (a 1 TB budget: a whole round in one batch, the behaviour before the bound),
batched and one client at a time. The check: peak RSS at 200 per round within 1.5x that at
10 per round, for the default configuration, batched and not.

    .venv/bin/python -m benchmarks.sim_memory [--hidden 19200] [--rounds 3] [--wide 200]
        [--repeats 1]

Peak RSS moves by tens of MiB from run to run (glibc keeps freed blocks), so ``--repeats``
takes the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common.measure import REPO_ROOT, failure_reason, run_child

MIB = 2**20
LIMIT = 1.5  # peak RSS at the wide round / at the narrow one
UNBOUNDED = 10**12  # simulation.max_batch_bytes that holds any round: no bound


@dataclass(frozen=True)
class Case:
    label: str
    batched: bool
    max_batch_bytes: int | None  # None: the default

    def overrides(self) -> list[str]:
        out = [f"simulation.batched={str(self.batched).lower()}"]
        if self.max_batch_bytes is not None:
            out.append(f"simulation.max_batch_bytes={self.max_batch_bytes}")
        return out


CASES = (
    Case("batched (default bound)", True, None),
    Case("one at a time (batched = false)", False, None),
    Case("batched, unbounded (before)", True, UNBOUNDED),
)


def peak_rss_mib(args: argparse.Namespace, case: Case, k: int, tmp: Path) -> tuple[float, float]:
    """Median peak RSS (MiB) and wall seconds of ``--repeats`` ``phalanx run`` children."""
    runs = [_one_run(args, case, k, tmp / f"{k}-{i}") for i in range(args.repeats)]
    return statistics.median(r for r, _ in runs), statistics.median(s for _, s in runs)


def _one_run(args: argparse.Namespace, case: Case, k: int, out: Path) -> tuple[float, float]:
    sets = [
        f"workload.hidden={args.hidden}",
        f"workload.num_clients={args.clients}",
        "workload.samples_per_client=32",
        "training.local_epochs=1",
        f"rounds={args.rounds}",
        f"selection.clients_per_round={k}",
        "checkpoint.every=0",
        *case.overrides(),
    ]
    argv = [sys.executable, "-m", "phalanx", "run", "seed", "--out", str(out), "--quiet"]
    argv += ["--no-plots", *(a for s in sets for a in ("--set", s))]
    run = run_child(argv, args.timeout, REPO_ROOT)
    reason = failure_reason(run, args.timeout)
    if reason is not None:
        raise SystemExit(f"{case.label}, k={k}: {reason}")
    return run.maxrss_kib * 1024 / MIB, run.wall_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=19200, help="hidden width (19200: 3.3 MB)")
    parser.add_argument("--clients", type=int, default=260, help="registered clients")
    parser.add_argument("--narrow", type=int, default=10, help="clients per round, narrow")
    parser.add_argument("--wide", type=int, default=200, help="clients per round, wide")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (median)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    args = parser.parse_args()
    model_mb = (43 * args.hidden + 10) * 4 / 1e6
    table = Table(
        title=f"Simulation peak RSS, seed workload, {model_mb:.1f} MB model, "
        f"{args.clients} clients, {args.rounds} rounds, median of {args.repeats}"
    )
    for column in ("training", f"k={args.narrow} MiB", f"k={args.wide} MiB", "ratio"):
        table.add_column(column, justify="left" if column == "training" else "right")
    table.add_column(f"k={args.narrow} / k={args.wide} wall s", justify="right")
    table.add_column(f"<= {LIMIT}x", justify="center")
    failed = False
    with tempfile.TemporaryDirectory(prefix="sim-memory-") as tmp:
        for index, case in enumerate(CASES):
            narrow, narrow_s = peak_rss_mib(args, case, args.narrow, Path(tmp, str(index)))
            wide, wide_s = peak_rss_mib(args, case, args.wide, Path(tmp, str(index)))
            ratio = wide / narrow
            checked = case.max_batch_bytes is None  # the bound's baseline is only shown
            verdict = ("PASS" if ratio <= LIMIT else "FAIL") if checked else "(baseline)"
            failed |= checked and ratio > LIMIT
            table.add_row(
                case.label, f"{narrow:.0f}", f"{wide:.0f}", f"{ratio:.2f}x",
                f"{narrow_s:.1f} / {wide_s:.1f}", verdict,
            )  # fmt: skip
    Console(width=120).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
