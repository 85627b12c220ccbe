"""Accuracy under faults: phalanx on the seed scenario, clean versus faulty.

One command, prints a table: the clean run, the seed's failure mix, and 20% of updates
silently corrupted (the client reports success) with each corruption kind and with all of
them mixed. For each: final accuracy, its distance to the clean run, corrupt updates
injected and aggregated, rejections by reason.

    .venv/bin/python -m benchmarks.fault_accuracy [--seeds 42 7 ...]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table

from phalanx.config import load_config
from phalanx.observability.summary import summarize
from phalanx.scenarios import scenario_path
from phalanx.simulation import Simulation

SILENT = "faults.rules=[{rate=0.2, kinds=['corrupt']}]"
CASES: dict[str, list[str]] = {
    "clean (faults off)": ["faults.enabled=false"],
    "seed failure mix": [],
    "20% silent noise": [SILENT, "faults.corruptions=['noise']"],
    "20% silent NaN": [SILENT, "faults.corruptions=['nan']"],
    "20% silent x-10 scaling": [SILENT, "faults.corruptions=['scale']"],
    "20% bit flips in transit": [SILENT, "faults.corruptions=['bitflip']"],
    "20% corrupt, all kinds": [SILENT, "faults.corruptions=['noise','nan','scale','bitflip']"],
}


def run_case(overrides: list[str], seed: int) -> dict[str, object]:
    config = load_config(scenario_path("seed"), [*overrides, f"seed={seed}"])
    result = Simulation(config).run()
    return summarize(result.history, wall_time_s=0.0, train_time_s=result.train_time_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = Table(title=f"phalanx accuracy under faults, seed scenario, seeds {args.seeds}")
    for column in ("case", "final accuracy", "vs clean", "corrupt injected / aggregated",
                   "rejections", "rounds failed"):  # fmt: skip
        table.add_column(column)
    clean: float | None = None
    for name, overrides in CASES.items():
        runs = [run_case(overrides, seed) for seed in args.seeds]
        accuracy = statistics.mean(float(r["final_accuracy"]) for r in runs)  # type: ignore[arg-type]
        clean = accuracy if clean is None else clean
        rejections: dict[str, int] = {}
        for r in runs:
            for reason, count in r["rejections"].items():  # type: ignore[attr-defined]
                rejections[reason] = rejections.get(reason, 0) + count
        table.add_row(
            name,
            f"{accuracy:.4f}",
            f"{100 * (accuracy - clean):+.2f} pts",
            f"{sum(r['corrupt_injected'] for r in runs)} / "  # type: ignore[misc]
            f"{sum(r['corrupt_aggregated'] for r in runs)}",  # type: ignore[misc]
            ", ".join(f"{k} {v}" for k, v in sorted(rejections.items())) or "none",
            str(sum(r["rounds_failed"] for r in runs)),  # type: ignore[misc]
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
