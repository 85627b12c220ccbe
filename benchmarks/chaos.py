"""Chaos: random fault schedules against a real coordinator and real client processes.

    .venv/bin/python -m benchmarks.chaos --schedules 200 --jobs 2
    .venv/bin/python -m benchmarks.chaos --seed 17            # replay one schedule
    .venv/bin/python -m benchmarks.chaos --schedules 20 --first-seed 1000 --keep runs/chaos
    .venv/bin/python -m benchmarks.chaos --partitions --time-budget-s 3600   # root: netns

Schedule ``i`` is ``draw_plan(first_seed + i)`` (``phalanx.testing.chaos``): 4-6 client
processes behind the in-repo chaos proxy, network fault windows, client SIGKILL and
SIGSTOP/SIGCONT, coordinator SIGKILL by a timer or at a checkpoint crash point then
``phalanx serve --resume`` on the same port. Each is checked (one chain of commits, every
checkpoint on it, nothing lost or doubled, no corrupt update aggregated, no coordinator
crash) and the table counts the failures; a failing schedule is printed with its seed, its
plan and its problems, and its directory is kept (under ``--keep``, or a temporary one that
is named) so it can be replayed with ``--seed``. Exits 1 when any schedule failed.

``--partitions`` runs each schedule in a private network namespace (``unshare -n``) with one
or two real partitions added (its loopback down for 0.5-3 s); where namespaces are not
permitted it says why and exits 2. ``--time-budget-s`` starts no schedule after that long,
and the table counts the schedules actually run. ``--transport`` picks TLS or plaintext for
every schedule (default ``auto``: TLS for the schedules that flip bytes, docs/chaos.md).

``--results FILE`` appends one JSON line per schedule as it ends; ``--table-from FILE...``
prints the table of saved lines (a run split over several commands, or cut short), and with
``--logs DIR...`` (one per file, the ``--keep`` folders) judges the kept coordinator logs
again by the current checks.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from phalanx.testing.chaos import ChaosRun, Outcome, draw_plan
from phalanx.testing.chaos.checks import log_crashes
from phalanx.testing.chaos.isolated import outcome_from_json, outcome_json, run_isolated
from phalanx.testing.chaos.netns import namespaces_unavailable


def run_one(seed: int, root: Path, args: argparse.Namespace) -> Outcome:
    workdir = root / f"seed-{seed}"
    plan = draw_plan(seed, partitions=args.partitions).model_copy(
        update={"transport": args.transport}
    )
    if args.partitions:
        return run_isolated(plan, workdir, deadline_s=args.deadline_s)
    return ChaosRun(plan, workdir, deadline_s=args.deadline_s).run()


def table(outcomes: list[Outcome], wall_s: float | None) -> str:
    verdicts = [o.verdict for o in outcomes]
    walls = [o.wall_s for o in outcomes]
    rows = [
        ("schedules run", str(len(outcomes))),
        ("of which over TLS", str(sum(o.plan.tls for o in outcomes))),
        ("lost commits", str(sum(v.lost for v in verdicts))),
        ("doubled commits", str(sum(v.doubled for v in verdicts))),
        ("off-chain checkpoints", str(sum(v.off_chain for v in verdicts))),
        ("corrupt updates aggregated", str(sum(v.corrupt for v in verdicts))),
        ("coordinator crashes", str(sum(v.crashes for v in verdicts))),
        ("grpcio records it handled itself (not crashes)",
         str(sum(v.grpc_logged for v in verdicts))),
        ("runs not completed", str(sum(not v.completed for v in verdicts))),
        ("coordinator deaths caused (restarted)",
         str(sum(sum(caused for _, caused in o.exits) for o in outcomes))),
        ("rounds committed / configured",
         f"{sum(v.committed for v in verdicts)} / {sum(o.plan.rounds for o in outcomes)}"),
        ("median wall time per schedule", f"{statistics.median(walls):.1f} s" if walls else "-"),
        ("total wall time", "-" if wall_s is None else f"{wall_s:.0f} s"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    return "\n".join([*lines, *(f"| {name.ljust(width)} | {value} |" for name, value in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None, help="replay this one schedule")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="schedules at once")
    parser.add_argument("--deadline-s", type=float, default=150.0, help="per schedule")
    parser.add_argument("--keep", type=Path, default=None, help="keep every schedule's files")
    parser.add_argument("--partitions", action="store_true", help="add netns partitions")
    parser.add_argument(
        "--transport", choices=("auto", "tls", "plaintext"), default="auto",
        help="auto: TLS for the schedules that flip bytes, plaintext for the others",
    )  # fmt: skip
    parser.add_argument("--time-budget-s", type=float, default=None, help="start none after")
    parser.add_argument("--results", type=Path, help="append each outcome to this JSON-lines file")
    parser.add_argument(
        "--table-from", type=Path, nargs="+", help="print the table of saved --results, run none"
    )
    parser.add_argument(
        "--logs", type=Path, nargs="+", help="with --table-from, one per results file: judge "
        "the coordinator logs kept there (seed-N/coordinator.log, as --keep leaves them) by the "
        "current checks",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.table_from:
        return table_from(args.table_from, args.logs)
    if args.schedules < 1 or args.jobs < 1:
        parser.error("--schedules and --jobs must be at least 1")
    if args.partitions and (reason := namespaces_unavailable()) is not None:
        print(f"partitions need private network namespaces: {reason}", file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else [
        args.first_seed + i for i in range(args.schedules)
    ]  # fmt: skip
    root = args.keep or Path(tempfile.mkdtemp(prefix="phalanx-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    budget = float("inf") if args.time_budget_s is None else args.time_budget_s
    pending = list(reversed(seeds))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        running: set[concurrent.futures.Future[Outcome]] = set()
        while pending or running:
            while pending and len(running) < args.jobs and time.monotonic() - started < budget:
                running.add(pool.submit(run_one, pending.pop(), root, args))
            if not running:
                break
            done, running = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                outcomes.append(report(future.result(), keep=args.keep is not None))
                save(outcomes[-1], args.results)
    print(table(sorted(outcomes, key=lambda o: o.plan.seed), time.monotonic() - started))
    if len(outcomes) < len(seeds):
        print(f"{len(seeds) - len(outcomes)} of {len(seeds)} schedules not started: time budget")
    failed = [o.plan.seed for o in outcomes if not o.verdict.ok]
    if failed:
        print(f"failing seeds (replay with --seed): {sorted(failed)}; files under {root}")
    elif args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def save(outcome: Outcome, path: Path | None) -> None:
    """One JSON line per schedule, appended as it ends: a long run cut short keeps its
    figures, and runs split over several commands make one table (``--table-from``)."""
    if path is not None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(outcome_json(outcome) + "\n")


def table_from(paths: list[Path], logs: list[Path] | None) -> int:
    """The table of saved outcomes (the last one saved for a seed run twice)."""
    if logs is not None and len(logs) != len(paths):
        raise SystemExit(f"--logs needs one folder per results file ({len(paths)})")
    by_seed: dict[int, Outcome] = {}
    for i, path in enumerate(paths):
        for line in path.read_text(encoding="utf-8").splitlines():
            outcome = outcome_from_json(line, path.parent)
            by_seed[outcome.plan.seed] = outcome if logs is None else rejudge(outcome, logs[i])
    outcomes = [by_seed[seed] for seed in sorted(by_seed)]
    print(table(outcomes, None))
    failed = [o.plan.seed for o in outcomes if not o.verdict.ok]
    for outcome in outcomes:
        if not outcome.verdict.ok:
            print(f"seed {outcome.plan.seed}:", *outcome.verdict.problems, sep="\n  ! ")
    return 1 if failed else 0


def rejudge(outcome: Outcome, logs: Path) -> Outcome:
    """``outcome`` with its coordinator log judged again by the current ``log_crashes`` (the
    rest of its verdict, from the run directory, is kept as saved)."""
    verdict = outcome.verdict
    log = logs / f"seed-{outcome.plan.seed}" / "coordinator.log"
    old = [p for p in verdict.problems if p.startswith("coordinator log holds")]
    verdict.problems = [p for p in verdict.problems if p not in old]
    crashes, verdict.grpc_logged = log_crashes(log.read_text(errors="replace"))
    verdict.crashes += len(crashes) - len(old)
    verdict.problems += crashes
    return outcome


def report(outcome: Outcome, *, keep: bool) -> Outcome:
    """One line per schedule; a failing one with its plan, its problems and its files (a
    passing one's files are removed unless kept)."""
    verdict = outcome.verdict
    print(
        f"seed {outcome.plan.seed}: {'ok' if verdict.ok else 'FAILED'} in {outcome.wall_s:.1f} s, "
        f"{verdict.committed}/{outcome.plan.rounds} committed, "
        f"coordinator exits {[code for code, _ in outcome.exits]}",
        flush=True,
    )
    if not verdict.ok:
        print(outcome.plan.describe(), *(f"  ! {p}" for p in verdict.problems),
              f"  files: {outcome.workdir}", sep="\n", flush=True)  # fmt: skip
    elif not keep and outcome.workdir is not None:
        shutil.rmtree(outcome.workdir, ignore_errors=True)
    return outcome


if __name__ == "__main__":
    sys.exit(main())
