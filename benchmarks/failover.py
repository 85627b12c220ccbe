"""Coordinator failover, measured on real processes (docs/failover.md).

    python -m benchmarks.failover --trials 50       # failover time, leader SIGKILL to commit
    python -m benchmarks.failover --schedules 100   # seeded random fault schedules, checked

Failover time: one group of three ``phalanx serve --ha`` coordinators (1-member etcd, lease
TTL ``--ttl``), clients from the failover driver answering each task after ``--answer-s``;
each trial waits until all three coordinators are up and the leader has committed in its
term, SIGKILLs the leader, and times until the committed pointer shows a round committed by
a higher epoch (polled every 20 ms); the killed coordinator is restarted for the next
trial. The target: median <= TTL + 1 s.

Schedules: ``testing.failover.runner`` draws each from its seed (1- or 3-member etcd; kills,
pauses, cuts, crash points, etcd member and quorum loss) and the history checker judges
what the coordinators logged. Target: 0 histories that are not one chain, 0 runs that fail
to finish.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from phalanx.testing.failover.group import Group
from phalanx.testing.failover.runner import Schedule, ScheduleRun


def failover_trials(trials: int, ttl_s: int, answer_s: float, workdir: Path) -> list[float]:
    times: list[float] = []
    with Group(workdir, rounds=100_000, ttl_s=ttl_s, answer_delay_s=answer_s) as group:
        group.start_all()
        for trial in range(trials):
            group.wait_for("all coordinators up", lambda: all(
                group.listening(i) for i in range(group.count)
            ), 300)  # fmt: skip
            group.wait_for("a leader that committed in its term", lambda: _settled(group), 120)
            index, epoch = group.leader() or (-1, 0)
            before = group.committed_round()
            group.signal(index, signal.SIGKILL)
            killed = time.monotonic()
            while time.monotonic() - killed < 60:
                pointer = group.pointer()
                if pointer is not None and pointer.epoch > epoch and pointer.round > before:
                    break
                time.sleep(0.02)
            times.append(time.monotonic() - killed)
            print(
                f"trial {trial + 1}: {times[-1]:.2f} s (from epoch {epoch})",
                flush=True,
            )
            group.start(index)
    return times


def _settled(group: Group) -> bool:
    leader, pointer = group.leader(), group.pointer()
    return leader is not None and pointer is not None and pointer.epoch == leader[1]


def distribution(times: list[float], ttl_s: int) -> str:
    ordered = sorted(times)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    rows = [
        ("trials", f"{len(times)}"), ("median", f"{statistics.median(times):.2f} s"),
        ("p10", f"{quantile(0.1):.2f} s"), ("p90", f"{quantile(0.9):.2f} s"),
        ("min", f"{ordered[0]:.2f} s"), ("max", f"{ordered[-1]:.2f} s"),
        ("target", f"median <= TTL + 1 = {ttl_s + 1} s: "
         f"{'met' if statistics.median(times) <= ttl_s + 1 else 'NOT met'}"),
    ]  # fmt: skip
    buckets = Counter(min(int(t * 2) / 2, 10.0) for t in times)
    histogram = [
        f"| {b:.1f}-{b + 0.5:.1f} s | {n} | {'#' * n} |" for b, n in sorted(buckets.items())
    ]
    return "\n".join(
        ["| failover (leader SIGKILL -> next commit) | |", "| --- | --- |",
         *(f"| {k} | {v} |" for k, v in rows), "", "| bucket | trials | |", "| --- | --- | --- |",
         *histogram]
    )  # fmt: skip


def schedules(count: int, first_seed: int, workdir: Path) -> list[dict[str, Any]]:
    results = []
    for seed in range(first_seed, first_seed + count):
        schedule = Schedule.draw(seed)
        outcome = ScheduleRun(schedule, workdir / f"s{seed}").run()
        kinds = ",".join(f.kind for f in schedule.faults)
        results.append({
            "seed": seed, "etcd": schedule.etcd_members, "faults": kinds,
            "completed": outcome.completed, "one_chain": outcome.one_chain,
            "violations": outcome.verdict.violations, "epochs": len(outcome.verdict.epochs),
            "refused": outcome.verdict.refused, "seconds": round(outcome.seconds, 1),
        })  # fmt: skip
        r = results[-1]
        print(f"seed {seed}: etcd {r['etcd']} [{kinds}] completed={r['completed']} "
              f"one_chain={r['one_chain']} epochs={r['epochs']} refused={r['refused']} "
              f"{r['seconds']} s {r['violations'] or ''}", flush=True)  # fmt: skip
    return results


def schedule_table(results: list[dict[str, Any]]) -> str:
    total = len(results)
    rows = [
        ("schedules", total),
        ("not one chain", sum(not r["one_chain"] for r in results)),
        ("failed to finish", sum(not r["completed"] for r in results)),
        ("with a 3-member etcd", sum(r["etcd"] == 3 for r in results)),
        ("leader changes (epochs - 1), total", sum(max(0, r["epochs"] - 1) for r in results)),
        ("commits refused by fencing", sum(r["refused"] for r in results)),
    ]
    kinds = Counter(k for r in results for k in r["faults"].split(","))
    return "\n".join(
        ["| random schedules | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), "",
         "| fault | times drawn (a fault due after the last round never fires) |", "| --- | --- |",
         *(f"| {k} | {n} |" for k, n in sorted(kinds.items()))]
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=0)
    parser.add_argument("--schedules", type=int, default=0)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--answer-s", type=float, default=0.2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="phalanx-failover-") as tmp:
        if args.trials:
            times = failover_trials(args.trials, args.ttl, args.answer_s, Path(tmp) / "trials")
            report["failover_s"] = times
            print(distribution(times, args.ttl))
        if args.schedules:
            results = schedules(args.schedules, args.first_seed, Path(tmp) / "schedules")
            report["schedules"] = results
            print(schedule_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
