"""Kill the coordinator again and again: SIGKILL at random instants, resume, compare.

Runs ``phalanx run`` as a real subprocess, first uninterrupted (the reference), then killed
``--kills`` times (every third kill at a checkpoint-write crash point, the others on a
timer) and resumed with ``--resume`` until it finishes; prints what landed and whether the
final model and committed history are bit-identical to the reference.

    .venv/bin/python -m benchmarks.kill_resume --kills 100
    .venv/bin/python -m benchmarks.kill_resume --kills 30 --reuse-seed 7

``--reuse-seed`` first leaves a finished, longer run of another seed in the run directory:
``--out`` refuses it, the driver (as a supervisor would) starts with ``--force``, and every
later refusal (no checkpoint of this run yet, or another run's configuration) is answered
the same way. A process that exits 0 must hold the reference's model, whenever it exits.

The driver is ``tests/faults/kill_driver.py``, shared with the 20-kill test; run from the
repository root, ``tests`` imports as a package.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tests.faults.kill_driver import KillReport, KillResumeDriver


def table(report: KillReport, *, rounds: int) -> Table:
    points = Counter(
        a.kill.crash_at.split("@")[0]
        for a in report.kills
        if a.landed and a.kill and a.kill.crash_at
    )
    rows = {
        "rounds": str(rounds),
        "kills attempted / landed": f"{len(report.kills)} / {report.landed}",
        "landed in training / start-up / at crash points": " / ".join(
            str(report.landed_by(kind)) for kind in ("training", "start-up", "crash point")
        ),
        "  by point": ", ".join(f"{p} {n}" for p, n in sorted(points.items())) or "none",
        "processes started / resumes": f"{len(report.attempts)} / {report.resumes}",
        "model version (reference / killed)": (
            f"{report.reference.model_version} / {report.final.model_version}"
        ),
        "refused starts (then --force)": str(report.refusals),
        "exits 0 with another model than the reference": str(report.wrong_exits),
        "params bit-identical": "yes" if report.identical_params else "NO",
        "committed history identical": "yes" if report.identical_history else "NO",
        "every record field identical (but wall_s)": "yes" if report.identical_records else "NO",
        "newest checkpoint after each kill": " ".join(str(a.round_after) for a in report.kills),
        "wall time": f"{report.wall_s:.1f} s",
    }
    out = Table(title="phalanx: SIGKILL and resume")
    out.add_column("")
    out.add_column("value")
    for name, value in rows.items():
        out.add_row(name, value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=None, help="default: 3 x kills, >= 100")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the kill instants")
    parser.add_argument(
        "--reuse-seed", type=int, default=None,
        help="first leave a finished run of this config seed in the run directory",
    )  # fmt: skip
    args = parser.parse_args()
    rounds = args.rounds or max(100, 3 * args.kills)
    with tempfile.TemporaryDirectory(prefix="phalanx-kill-") as workdir:
        driver = KillResumeDriver(Path(workdir), rounds=rounds, seed=args.seed)
        report = driver.run(args.kills, reuse_seed=args.reuse_seed)
    Console(width=120).print(table(report, rounds=rounds))
    good = report.identical_params and report.identical_history and not report.wrong_exits
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
