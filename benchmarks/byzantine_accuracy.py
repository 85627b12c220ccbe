"""Accuracy under Byzantine attack, on held-out seeds: every attack x every aggregator x
partition (IID, Dirichlet 1.0, 0.5, 0.3, 0.1) x setting (10/20/30% Byzantine with f right,
30% with f sized for 20%), plus each aggregator's clean accuracy. Prints summary tables and
issue 13's acceptance checks; writes docs/byzantine_<dataset>.md, .json and a heatmap PNG.

    .venv/bin/python -m benchmarks.byzantine_accuracy --workers 2          # digits, full grid
    .venv/bin/python -m benchmarks.byzantine_accuracy --acceptance         # the checks' cells
    .venv/bin/python -m benchmarks.byzantine_accuracy --seeds 1234 5678    # reproduce a report

The seeds are drawn at run time (``--draw-seeds`` of them) and are never the seeds the
default was tuned on (``benchmarks/byzantine/tuning.py``); pinned ``--seeds`` are refused if
one of them is, unless ``--allow-tuning-seeds`` (the report then says so). Cells run in
``--workers`` processes, one torch thread each. Finished cells are kept in the JSON file
with the seeds, so an interrupted run resumes on the same seeds (``--fresh`` starts over;
``--more-seeds N`` draws N more held-out seeds for the stored run and runs only their cells;
the seeds are stored before the first cell runs, so an interrupted run resumes without it).
The base scenario is the shipped ``robust`` one; ``--set`` overrides it (e.g. rounds=50).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.byzantine.cells import PARTITIONS, Plan, acceptance_grid, full_grid
from benchmarks.byzantine.grid import AGGREGATORS, ATTACKS, VALIDATION_MODES, cell_config, run_job
from benchmarks.byzantine.report import render
from benchmarks.byzantine.seeds import DRAWN, Seeds, draw_seeds, given_seeds
from benchmarks.common.measure import REPO_ROOT
from phalanx.core.files import write_atomic
from phalanx.errors import ConfigError, PhalanxError

DOCS = REPO_ROOT / "docs"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist"])
    parser.add_argument(
        "--acceptance",
        action="store_true",
        help="only the cells the acceptance checks read (default and fedavg)",
    )
    parser.add_argument("--partitions", nargs="+", default=list(PARTITIONS))
    parser.add_argument(
        "--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3], choices=[0.1, 0.2, 0.3]
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="pin the seeds (reproduction)")
    parser.add_argument("--draw-seeds", type=int, default=3, help="how many seeds to draw")
    parser.add_argument(
        "--more-seeds",
        type=int,
        default=0,
        help="draw this many more held-out seeds for the stored run and run only their cells "
        "(each time it is given: resume an interrupted run without it)",
    )
    parser.add_argument("--allow-tuning-seeds", action="store_true")
    parser.add_argument(
        "--aggregators", nargs="+", default=list(AGGREGATORS), choices=list(AGGREGATORS)
    )
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    parser.add_argument("--validation", default="scenario", choices=VALIDATION_MODES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--out", type=Path, default=DOCS)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What every stored cell must share with this run for a resume to mix them."""
    return {"dataset": args.dataset, "overrides": args.overrides, "validation": args.validation}


def load(path: Path, args: argparse.Namespace) -> tuple[Seeds, dict[str, Any]]:
    """The seeds of this run and the cells already finished: the stored ones when the file
    holds a run with the same settings (and seeds, when pinned), fresh ones otherwise."""
    stored = None if args.fresh or not path.exists() else json.loads(path.read_text())
    pinned = (
        None
        if args.seeds is None
        else given_seeds(args.seeds, allow_tuning=args.allow_tuning_seeds)
    )
    if stored is None:
        if args.more_seeds:
            raise ConfigError(f"--more-seeds adds to a stored run, and {path} holds none")
        return pinned or Seeds(draw_seeds(args.draw_seeds), DRAWN), {}
    if "settings" not in stored:
        raise ConfigError(
            f"{path} was written before held-out seeds (no seeds recorded); "
            "pass --fresh to replace it or --results for another file"
        )
    if stored["settings"] != settings(args):
        raise ConfigError(
            f"{path} holds cells run with {stored['settings']}, not "
            f"{settings(args)}; pass --fresh or --results"
        )
    seeds = Seeds(tuple(stored["seeds"]), stored["seed_source"])
    if pinned is not None and sorted(pinned.seeds) != sorted(seeds.seeds):
        raise ConfigError(
            f"{path} holds seeds {list(seeds.seeds)}, not the --seeds given; "
            "pass --fresh or --results"
        )
    return more_seeds(seeds, args.more_seeds), stored["cells"]


def more_seeds(seeds: Seeds, count: int) -> Seeds:
    """``seeds`` and ``count`` more drawn at run time (none of them a tuning seed or one
    already there). Why: a report's means over three seeds move by a point or more from one
    draw to the next, the size of the acceptance thresholds; more seeds narrow that without
    throwing away the cells already run."""
    if count == 0:
        return seeds
    if count < 0:
        raise ConfigError(f"--more-seeds must be at least 0; got {count}")
    drawn = draw_seeds(count, forbidden=seeds.seeds)
    source = seeds.source if seeds.source == DRAWN else f"{seeds.source}, {count} more {DRAWN}"
    return Seeds((*seeds.seeds, *drawn), source)


def save(path: Path, args: argparse.Namespace, seeds: Seeds, done: dict[str, Any]) -> None:
    record = {
        "settings": settings(args),
        "seeds": list(seeds.seeds),
        "seed_source": seeds.source,
        "cells": done,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record).encode())


def main(argv: list[str] | None = None) -> int:
    """Runs the cells still missing, then the report; a PhalanxError (bad seeds, a stored
    file from other settings, a data set missing in a worker) ends it with its exit code."""
    console = Console()
    try:
        run(parse(argv), console)
    except PhalanxError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return error.exit_code
    return 0


def run(args: argparse.Namespace, console: Console) -> None:
    # The acceptance preset keeps its cells beside its report, apart from the full grid's.
    stem = f"byzantine_{args.dataset}" + ("_acceptance" if args.acceptance else "")
    path = args.results or args.out / f"{stem}.json"
    seeds, done = load(path, args)
    console.print(f"seeds {', '.join(map(str, seeds.seeds))}: {seeds.source}")
    plan = Plan(
        args.dataset,
        args.partitions,
        args.fractions,
        args.aggregators,
        args.attacks,
        seeds.seeds,
        args.validation,
    )
    wanted = acceptance_grid(plan) if args.acceptance else full_grid(plan)
    todo = [c for c in wanted if c.key() not in done]
    console.print(f"{len(wanted)} cells, {len(todo)} to run ({len(wanted) - len(todo)} in {path})")
    if todo:
        cell_config(todo[0], args.overrides)  # bad overrides fail here, not in every worker
    save(path, args, seeds, done)  # the seeds are on disk before the first cell runs
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [pool.submit(run_job, cell, args.overrides) for cell in todo]
        try:
            for count, future in enumerate(as_completed(futures), 1):
                cell, outcome = future.result()
                done[cell.key()] = {"cell": asdict(cell), "outcome": asdict(outcome)}
                if count % 20 == 0:
                    console.print(f"{count}/{len(todo)} cells, {time.perf_counter() - start:.0f} s")
                    save(path, args, seeds, done)
        finally:  # whatever ends the loop, the finished cells are kept and the rest dropped
            pool.shutdown(cancel_futures=True)
            save(path, args, seeds, done)
    keys = {c.key() for c in wanted}
    meta = {**settings(args), "seeds": list(seeds.seeds), "seed_source": seeds.source}
    render(
        {k: v for k, v in done.items() if k in keys}, meta, stem=stem, out=args.out, console=console
    )


if __name__ == "__main__":
    sys.exit(main())
