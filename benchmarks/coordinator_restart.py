"""The coordinator SIGKILLed mid-round and restarted: clients back, and the next commit.

    .venv/bin/python -m benchmarks.coordinator_restart                 # 4 launches x 3 kills
    .venv/bin/python -m benchmarks.coordinator_restart --launches 1 --backoff-cap-s 5

Each launch (``phalanx.testing.chaos.restart.RestartRun``) is a coordinator and 4 client
processes on loopback, the seed workload, a checkpoint every round; the coordinator is
SIGKILLed part way into a round three times (timed after rounds 1, 4 and 7 of 12, each kill
once the previous one's clients were all back) and restarted at once with ``phalanx serve
--resume`` on the same port. Per kill: SIGKILL to listening again, listening to every client
joined again (issue 11's bound: the clients' backoff cap + 1 s), listening to the next
committed round. The table gives the median and the max over all kills, how many kills met
the bound, and whether every run ended with every committed round kept (the chaos checks).
Writes docs/coordinator_restart.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common.measure import machine_info
from phalanx.testing.chaos.restart import Kill, RestartOutcome, RestartRun

SLACK_S = 1.0  # issue 11: clients back within the backoff cap + 1 s
COMMAND = "python -m benchmarks.coordinator_restart"
HOW = [
    "How it is timed: a thread polls the coordinator's log and `history.jsonl` every 5 ms "
    "and stamps each new line (`phalanx.testing.chaos.watch`); the log is only appended to,"
    " so the lines after the killed incarnation's last byte are the new one's. A kill lands"
    " 0.3 to 0.7 of the previous round's length after that round was recorded, so the "
    "clients are training when the coordinator dies. 'SIGKILL -> listening' is the new "
    "process starting (interpreter, torch, scenario; the checkpoint is read after): the "
    "machine's share, not the clients'. The clients' own backoff is capped exponential with"
    " full jitter; each client replaces its channel after a transport failure, so gRPC's "
    "own reconnect backoff never adds to it.",
]


def measure(args: argparse.Namespace) -> list[RestartOutcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="phalanx-restart-") as tmp:
        root = args.keep or Path(tmp)
        for i in range(args.launches):
            run = RestartRun(root / f"launch-{i}", clients=args.clients,
                             backoff_cap_s=args.backoff_cap_s, seed=args.seed + i)  # fmt: skip
            outcome = run.run()
            outcomes.append(outcome)
            print(f"launch {i}: {len(outcome.kills)} kills, checks "
                  f"{'ok' if outcome.verdict.ok else outcome.verdict.problems}, "
                  f"{outcome.wall_s:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    return outcomes


def stats(values: list[float | None]) -> tuple[str, str]:
    present = [v for v in values if v is not None]
    if not present:
        return "—", "—"
    never = len(values) - len(present)
    missing = f" (+{never} never)" if never else ""
    return f"{statistics.median(present):.2f}", f"{max(present):.2f}{missing}"


def kills_of(launches: list[dict[str, Any]]) -> list[Kill]:
    return [
        Kill(
            k["round"],
            k["listen_s"],
            {int(c): t for c, t in k["back_s"].items()},
            k["commit_s"],
            k.get("observed_s"),
        )
        for launch in launches
        for k in launch["kills"]
    ]


def cut_short(kill: Kill, clients: int, bound: float) -> bool:
    """The run ended before every client was back and before the bound had passed: how
    soon they would have come back cannot be seen, so the kill is not judged."""
    incomplete = kill.all_back_s(clients) is None
    return incomplete and kill.observed_s is not None and kill.observed_s < bound


def to_markdown(saved: dict[str, Any]) -> str:
    """The table of a saved run (``saved``: what ``--json`` holds)."""
    launches, setup, info = saved["launches"], saved["setup"], saved["machine"]
    clients, cap = setup["clients"], setup["backoff_cap_s"]
    bound = cap + SLACK_S
    made = kills_of(launches)
    kills = [k for k in made if not cut_short(k, clients, bound)]
    back = [k.all_back_s(clients) for k in kills]
    met = sum(b is not None and b <= bound for b in back)
    rounds, after = setup.get("rounds", 8), setup.get("kill_after", [1, 3, 5])
    planned = len(after) * len(launches)
    rows = [
        ("SIGKILL -> listening again", stats([k.listen_s for k in kills])),
        ("listening -> every client joined again", stats(back)),
        ("listening -> next committed round", stats([k.commit_s for k in kills])),
        ("SIGKILL -> next committed round",
         stats([None if k.commit_s is None or k.listen_s is None else k.listen_s + k.commit_s
                for k in kills])),
    ]  # fmt: skip
    kept = sum(launch["ok"] for launch in launches)
    lines = [
        "# Coordinator SIGKILLed mid-round and restarted",
        "",
        f"`{COMMAND}`: {len(made)} SIGKILLs of the coordinator part way into a round, of "
        f"{planned} planned ({len(launches)} launches of {clients} client processes and "
        f"{rounds} rounds, a kill timed after rounds {', '.join(map(str, after))} or the "
        "first round recorded once the previous kill's clients were all back; backoff cap "
        f"{cap:g} s, 0.5 s heartbeats and a 2 s patience as in issue 11's dead-client figure), "
        "each restarted at once with `phalanx serve --resume` on the same port. Seconds; "
        "'listening' is the new incarnation's `listening on` line, printed once its gRPC "
        "server has started.",
        "",
        "| measure | median | max |",
        "|---|---:|---:|",
        *(f"| {name} | {median} | {worst} |" for name, (median, worst) in rows),
        "",
        f"- every client joined again within the backoff cap + 1 s ({bound:g} s) of "
        f"listening: {met} of {len(kills)} kills: "
        f"{'PASS' if kills and met == len(kills) else 'FAIL'}"
        + (
            f" ({len(made) - len(kills)} more not judged: the run ended within {bound:g} s "
            "of listening, before every client was back)"
            if len(made) > len(kills)
            else ""
        ),
        f"- runs ending with every committed round kept, once, and every checkpoint on the "
        f"chain (the chaos checks): {kept} of {len(launches)}",
    ]
    for i, launch in enumerate(launches):
        lines += [f"  - launch {i}: {p}" for p in launch["problems"]]
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    lines += ["", *HOW, "", f"_{machine}; one torch thread per process._", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coordinator_restart")
    parser.add_argument("--launches", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--backoff-cap-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=Path("docs/coordinator_restart.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/coordinator_restart.json"))
    parser.add_argument("--from-json", type=Path, help="render a saved run, measure nothing")
    parser.add_argument(
        "--keep", type=Path, help="keep each launch's files here (logs, coordinator.timed.log)"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        load_before = os.getloadavg()
        outcomes = measure(args)
        info = machine_info(args.launches) | {
            "load average before": " ".join(f"{x:.1f}" for x in load_before),
            "after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        }
        launches = [{"kills": [asdict(k) for k in o.kills], "ok": o.verdict.ok,
                     "problems": o.verdict.problems, "wall_s": o.wall_s}
                    for o in outcomes]  # fmt: skip
        plan = RestartRun(Path(), clients=args.clients)
        setup = {"clients": args.clients, "backoff_cap_s": args.backoff_cap_s,
                 "rounds": plan.rounds, "kill_after": list(plan.kill_after)}  # fmt: skip
        saved = {"launches": launches, "setup": setup, "machine": info}
        args.json.write_text(json.dumps(saved, indent=1))
    text = to_markdown(saved)
    print(text)
    args.markdown.write_text(text, encoding="utf-8")
    return 0 if all(launch["ok"] for launch in saved["launches"]) else 1


if __name__ == "__main__":
    sys.exit(main())
