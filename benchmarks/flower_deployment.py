"""The seed scenario deployed on loopback: phalanx's gRPC launcher against Flower's
deployment engine (its SuperLink and one SuperNode per client), same workload, same run.

    .venv/bin/python -m benchmarks.flower_deployment            # peers: make bench-peers
    .venv/bin/python -m benchmarks.flower_deployment --rounds 10 --only flower

Both contenders train the seed scenario's MLP on the very data phalanx generates (exported
for Flower, whose environment cannot import phalanx: ``deployment/workload.py``) from the
same initial parameters, 10 of 20 clients per round, the scenario's local epochs, batch and
learning rate, faults off and no over-selection (Flower has neither), the global model
evaluated on the test set after every round. Every process runs one torch thread.

Per contender: wall seconds from the first process started to the last round done, the
training seconds it reports itself (phalanx: ``summary.json``'s ``train_time_s``; Flower:
the ServerApp's clock from the first round sent, once every SuperNode is connected, to the
last aggregated), the coordinator's peak RSS (VmHWM from ``/proc``: phalanx's coordinator;
Flower's SuperLink, and its ServerApp process beside it) and the final accuracy. Repeats
alternate the contenders and report medians. Writes docs/flower_deployment.md and .json.
A contender that cannot run (phalanx's launcher refusing, Flower not
installed) is reported with its own message; the exit code is 0 unless ``--strict``.
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

from benchmarks.common.measure import REPO_ROOT, machine_info
from benchmarks.deployment.contenders import Outcome, run_flower, run_phalanx
from benchmarks.deployment.workload import export, scenario

PEERS_BIN = REPO_ROOT / ".venv-peers" / "bin"
HOW = [
    "How it runs: phalanx as `python -m phalanx launch SCENARIO` (its launcher: a "
    "coordinator and one process per client); Flower as its deployment documentation runs "
    "it, from `.venv-peers`: `flower-superlink --insecure`, one `flower-supernode --insecure "
    "--superlink 127.0.0.1:PORT --node-config partition-id=i` per client, then `flwr run "
    "benchmarks/flower_app bench --stream` with a private `FLWR_HOME/config.toml` naming "
    "that SuperLink. The SuperLink starts the ServerApp (FedAvg, 10 of 20 nodes per round, "
    "server-side evaluation on the test set after every round) in a subprocess, and each "
    "SuperNode runs its ClientApp in processes of its own (Flower's default `subprocess` "
    "isolation, through a SuperExec process per SuperNode), which import torch and flwr "
    "anew. Both train the seed MLP on phalanx's own data from the same "
    "initial parameters (exported as plain arrays), with the scenario's local epochs, batch "
    "and learning rate, faults off and no over-selection. Wall: first process started to the "
    "last round done. Training: each contender's own clock (Flower's ServerApp: first round "
    "sent, once all SuperNodes are connected, to the last round aggregated). Coordinator "
    "peak RSS: VmHWM from /proc (Flower: the SuperLink; its ServerApp process, which holds "
    "the model and the strategy, is the next column).",
]
TARGET = 5.0  # issue 11: phalanx >= 5x faster than Flower's deployment engine


def flower_version(peers_bin: Path) -> str | None:
    version = peers_bin.parent / "lib"
    found = sorted(version.glob("python3*/site-packages/flwr-*.dist-info"))
    return found[0].name.split("-")[1].removesuffix(".dist") if found else None


def once(args: argparse.Namespace, data: Path, run_config: dict[str, Any], which: str) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"deploy-{which}-") as scratch:
        if which == "phalanx":
            _, overrides = scenario(args.scenario, args.rounds)
            return run_phalanx(args.scenario, overrides, args.clients, Path(scratch), args.timeout)
        if not (args.peers_bin / "flower-superlink").exists():
            return Outcome(
                "Flower", error=f"no {args.peers_bin}/flower-superlink; run make bench-peers"
            )
        return run_flower(args.peers_bin, run_config | {"data-path": str(data)}, args.clients,
                          Path(scratch), args.timeout)  # fmt: skip


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(key: str, runs: list[Outcome]) -> dict[str, Any]:
    ok = [r for r in runs if r.error is None]
    return {
        "key": key,
        "name": runs[0].name,
        "runs": len(ok),
        "wall_s": median([r.wall_s for r in ok]),
        "train_s": median([r.train_s for r in ok]),
        "coordinator_mib": median([r.coordinator_mib for r in ok]),
        "coordinator": ok[0].coordinator_what if ok else "",
        "serverapp_mib": median([r.extra.get("serverapp_mib") for r in ok]),
        "largest_process_mib": median([r.all_mib for r in ok]),
        "processes": max((r.processes for r in ok), default=0),
        "final_accuracy": median([r.final_accuracy for r in ok]),
        "errors": [r.error for r in runs if r.error],
        "all": [asdict(r) for r in runs],
    }


def cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def to_markdown(
    rows: list[dict[str, Any]], info: dict[str, Any], run_config: dict[str, Any]
) -> str:
    rounds, clients = run_config["num-server-rounds"], run_config["min-nodes"]
    per_round = round(clients * run_config["fraction-train"])
    lines = [
        f"The `{run_config.get('scenario', 'seed')}` scenario on loopback: {rounds} rounds, "
        f"{clients} client processes, {per_round} per round, faults off; medians of "
        f"{info['repeats']} alternating repeat(s). `python -m benchmarks.flower_deployment`.",
        "",
        "| contender | wall s | training s | training s / round | coordinator peak RSS MiB "
        "| ServerApp peak RSS MiB | processes | final accuracy | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_round = r["train_s"] / rounds if r["train_s"] is not None else None
        lines.append(
            f"| {r['name']} | {cell(r['wall_s'], '.1f')} | {cell(r['train_s'], '.1f')} | "
            f"{cell(per_round, '.2f')} | "
            f"{cell(r['coordinator_mib'], '.0f')} | {cell(r['serverapp_mib'], '.0f')} | "
            f"{r['processes'] or '—'} | {cell(r['final_accuracy'], '.4f')} | {r['runs']} |"
        )
    lines.append("")
    for r in rows:
        for error in dict.fromkeys(r["errors"]):
            lines.append(f"- {r['name']}: {error}")
    by_name = {r["key"]: r for r in rows}
    ours, theirs = by_name.get("phalanx", {}), by_name.get("flower", {})
    if ours.get("wall_s") and theirs.get("wall_s"):
        ratio = theirs["wall_s"] / ours["wall_s"]
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        lines.append(
            f"- Flower wall / phalanx wall: {ratio:.1f}x (target >= {TARGET:.0f}x): {verdict}"
        )
    else:
        lines.append(
            f"- Flower wall / phalanx wall: N/A until both rows ran (target >= {TARGET:.0f}x)"
        )
    flower = by_name.get("flower", {})
    programs = flower["all"][0]["extra"].get("programs") if flower.get("runs") else None
    lines += ["", *HOW]
    if programs:
        seen = ", ".join(f"{name} x{count}" for name, count in sorted(programs.items()))
        lines += ["", f"Flower's processes in the first run, by program: {seen}."]
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    lines += ["", f"_{machine}; one torch thread per process._", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="seed")
    parser.add_argument("--rounds", type=int, help="fewer rounds than the scenario's")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=("phalanx", "flower"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--peers-bin", type=Path, default=PEERS_BIN)
    parser.add_argument("--markdown", type=Path, default=Path("docs/flower_deployment.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/flower_deployment.json"))
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--from-json", type=Path, help="render a saved run, measure nothing")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        text = to_markdown(saved["rows"], saved["machine"], saved["run_config"])
        args.markdown.write_text(text, encoding="utf-8")
        print(text)
        return
    config, _ = scenario(args.scenario, args.rounds)
    if config.workload.num_clients != args.clients:
        raise SystemExit(
            f"{args.scenario} has {config.workload.num_clients} clients, not {args.clients}"
        )
    run_config = {
        "scenario": args.scenario,
        "flwr": flower_version(args.peers_bin) or "",
        "num-server-rounds": config.rounds,
        "fraction-train": config.selection.clients_per_round / args.clients,
        "min-nodes": args.clients,
        "local-epochs": config.training.local_epochs,
        "batch-size": config.training.batch_size,
        "lr": config.training.lr,
        "seed": config.seed,
    }
    which = [w for w in ("phalanx", "flower") if args.only in (None, w)]
    runs: dict[str, list[Outcome]] = {w: [] for w in which}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="deploy-data-") as tmp:
        data = Path(tmp) / "seed.npz"
        export(config, data)
        for repeat in range(args.repeats):
            for w in which:
                print(f"repeat {repeat + 1}/{args.repeats}: {w}", file=sys.stderr, flush=True)
                runs[w].append(once(args, data, run_config, w))
                print(f"  {asdict(runs[w][-1])}"[:400], file=sys.stderr, flush=True)
    rows = [summarise(w, runs[w]) for w in which]
    info = machine_info(args.repeats) | {
        "load average before": " ".join(f"{x:.1f}" for x in load_before),
        "after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    text = to_markdown(rows, info, run_config)
    print(text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text, encoding="utf-8")
    args.json.write_text(
        json.dumps({"rows": rows, "machine": info, "run_config": run_config}, indent=1)
    )
    if args.strict and any(r["errors"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
