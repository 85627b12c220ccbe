"""A schedule in a private network namespace, where partitions can be real.

The proxy fakes a broken network in user space; a partition here is the kernel's: the
schedule runs under ``unshare -n`` (root, or a user namespace where allowed) in a namespace
with nothing but its own loopback, and a ``Partition`` event takes that loopback down, so
every packet between clients, proxy and coordinator is dropped silently and new connects
time out, then brings it back up. Nothing outside the namespace notices. Taking a loopback
down is refused unless this process is in a namespace of its own (never the host's).

``run_isolated`` starts ``python -m phalanx.testing.chaos.isolated`` under ``unshare -n``,
which plays the schedule and writes its outcome as JSON into the schedule's directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from phalanx.testing.chaos.checks import Verdict
from phalanx.testing.chaos.netns import set_loopback
from phalanx.testing.chaos.plan import ChaosPlan, draw_plan
from phalanx.testing.chaos.runner import ChaosRun, Outcome

OUTCOME_FILE = "outcome.json"
EXIT_SLACK_S = 120.0  # past the schedule's deadline, for start-up, checks and reaping


def outcome_json(outcome: Outcome) -> str:
    return json.dumps({
        "plan": json.loads(outcome.plan.to_json()), "verdict": asdict(outcome.verdict),
        "wall_s": outcome.wall_s, "exits": outcome.exits, "timed_out": outcome.timed_out,
    })  # fmt: skip


def outcome_from_json(text: str, workdir: Path) -> Outcome:
    data = json.loads(text)
    return Outcome(
        plan=ChaosPlan.model_validate(data["plan"]), verdict=Verdict(**data["verdict"]),
        wall_s=float(data["wall_s"]), exits=[(int(c), bool(k)) for c, k in data["exits"]],
        timed_out=bool(data["timed_out"]), workdir=workdir,
    )  # fmt: skip


def run_isolated(
    plan: ChaosPlan, workdir: Path, *, deadline_s: float = 150.0, epochs: int = 20
) -> Outcome:
    """Play ``plan`` in a fresh network namespace (``unshare -n``); bounded by the deadline."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "plan.json").write_text(plan.to_json())
    command = [
        "unshare", "-n", sys.executable, "-m", "phalanx.testing.chaos.isolated",
        "--plan", str(workdir / "plan.json"), "--workdir", str(workdir),
        "--deadline-s", str(deadline_s), "--epochs", str(epochs),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=deadline_s + EXIT_SLACK_S, check=False
    )
    result = workdir / OUTCOME_FILE
    if done.returncode != 0 or not result.exists():
        verdict = Verdict(problems=[f"the isolated schedule exited {done.returncode}: "
                                    f"{done.stderr.strip()[-500:]}"])  # fmt: skip
        return Outcome(plan, verdict, 0.0, workdir=workdir)
    return outcome_from_json(result.read_text(), workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phalanx.testing.chaos.isolated")
    parser.add_argument("--plan", type=Path, help="a plan's JSON (else --seed draws one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, default=150.0)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    set_loopback(True)  # a new namespace's loopback starts down
    plan = (
        ChaosPlan.from_json(args.plan.read_text()) if args.plan
        else draw_plan(args.seed, partitions=True)
    )  # fmt: skip
    outcome = ChaosRun(
        plan, args.workdir, deadline_s=args.deadline_s, epochs=args.epochs, partitions=True
    ).run()
    (args.workdir / OUTCOME_FILE).write_text(outcome_json(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
