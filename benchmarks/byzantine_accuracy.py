"""Accuracy under Byzantine attack: every attack x every aggregator x Byzantine fraction x
partition, 3 seeds each, plus each aggregator's clean accuracy and its worst case over the
attacks. Prints tables, writes docs/byzantine_<dataset>.md, .json and a heatmap PNG.

    .venv/bin/python -m benchmarks.byzantine_accuracy                      # digits, full grid
    .venv/bin/python -m benchmarks.byzantine_accuracy --dataset fashion_mnist --fractions 0.2

Cells run in ``--workers`` processes, one torch thread each. Finished cells are kept in the
JSON file, so an interrupted run picks up where it stopped (``--fresh`` starts over).
The base scenario is the shipped ``robust`` one; ``--set`` overrides it (e.g. rounds=50).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from benchmarks.byzantine.grid import AGGREGATORS, ATTACKS, CLEAN, Cell, run_job
from benchmarks.byzantine.report import render
from benchmarks.common.measure import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def grid(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for partition in args.partitions:
        for seed in args.seeds:
            for aggregator in args.aggregators:
                cells.append(Cell(args.dataset, partition, 0.0, CLEAN, aggregator, seed))
                for fraction in args.fractions:
                    for attack in args.attacks:
                        cells.append(
                            Cell(args.dataset, partition, fraction, attack, aggregator, seed)
                        )
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist"])
    parser.add_argument("--partitions", nargs="+", default=["iid", "dirichlet0.5"])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 123])
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    console = Console()
    path = args.results or args.out / f"byzantine_{args.dataset}.json"
    stored = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    done = {k: v for k, v in stored.get("cells", {}).items()}
    todo = [c for c in grid(args) if c.key() not in done]
    console.print(f"{len(todo)} cells to run ({len(done)} already in {path})")
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [pool.submit(run_job, cell, args.overrides) for cell in todo]
        for count, future in enumerate(as_completed(futures), 1):
            cell, outcome = future.result()
            done[cell.key()] = {"cell": asdict(cell), "outcome": asdict(outcome)}
            if count % 20 == 0 or count == len(todo):
                elapsed = time.perf_counter() - start
                console.print(f"{count}/{len(todo)} cells, {elapsed:.0f} s")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"overrides": args.overrides, "cells": done}))
    path.write_text(json.dumps({"overrides": args.overrides, "cells": done}))
    render(done, dataset=args.dataset, out=args.out, console=console)


if __name__ == "__main__":
    main()
