"""The two deployments of the seed scenario on loopback, each a tree of real processes:

- **phalanx**: ``python -m phalanx launch SCENARIO`` (the launcher starts the
  coordinator and one process per client); the coordinator is the process whose command
  runs ``serve``, or the launcher itself when it coordinates in-process.
- **Flower**: its deployment engine as Flower documents it: ``flower-superlink
  --insecure``, one ``flower-supernode --insecure --superlink ... --node-config
  partition-id=i`` per client, then ``flwr run APP CONNECTION --stream`` against a Flower
  configuration (``FLWR_HOME/config.toml``) naming the SuperLink. The SuperLink starts the
  ServerApp in a subprocess and each SuperNode its ClientApp processes (Flower's default
  ``subprocess`` isolation); all of them run ``.venv-peers/bin/python``.

Each contender returns wall seconds (first process started to the last round done),
training seconds (as the contender itself reports them), the coordinator's peak RSS,
final accuracy, and why it did not run if it did not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common.measure import ONE_THREAD, REPO_ROOT
from benchmarks.deployment.procs import Group, Watcher, free_ports, tail, wait_for_port

APP = REPO_ROOT / "benchmarks" / "flower_app"


@dataclass
class Outcome:
    """One contender's run: numbers, or the reason there are none."""

    name: str
    wall_s: float | None = None
    train_s: float | None = None
    coordinator_mib: float | None = None
    coordinator_what: str = ""
    all_mib: float | None = None  # the largest process peak of the whole tree
    processes: int = 0
    final_accuracy: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_phalanx(
    scenario: str, overrides: list[str], clients: int, scratch: Path, timeout_s: float
) -> Outcome:
    """The launcher; "not available yet" with its own message if it refuses the runtime."""
    out = Outcome("phalanx (gRPC, loopback)")
    run_dir = scratch / "phalanx-run"
    argv = [sys.executable, "-m", "phalanx", "launch", scenario, "--clients", str(clients),
            "--out", str(run_dir), "--quiet", "--no-plots",
            *(item for o in overrides for item in ("--set", o))]  # fmt: skip
    group = Group(scratch, {**os.environ, **ONE_THREAD})
    watcher = Watcher()
    start = time.perf_counter()
    try:
        launcher = group.start("phalanx", argv, cwd=REPO_ROOT)
        watcher.roots.add(launcher.pid)
        watcher.start()
        try:
            code = launcher.wait(timeout_s)
        except subprocess.TimeoutExpired:
            out.error = f"did not finish within {timeout_s:.0f} s"
            return out
        out.wall_s = time.perf_counter() - start
    finally:
        group.stop()
        watcher.stop()
    if code != 0:
        message = tail(scratch / "phalanx.log", 3) or f"exit code {code}"
        out.error = f"not available yet (exit code {code}): {message}"
        out.wall_s = None
        return out
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    out.train_s = summary.get("train_time_s")
    out.final_accuracy = summary.get("final_accuracy")
    servers = watcher.matching(" serve ")
    coordinator = servers[0] if servers else launcher.pid
    out.coordinator_mib = watcher.peak_mib(coordinator)
    out.coordinator_what = "phalanx serve" if servers else "launcher (coordinates in-process)"
    return _tree(out, watcher)


def _program(command: str) -> str:
    """A process's program: the script or module after the interpreter, without its path."""
    words = command.split()
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words):
            return words[i + 1]
        if i > 0 or "python" not in word:
            return word.rsplit("/", 1)[-1]
    return words[0].rsplit("/", 1)[-1] if words else "?"


def _tree(out: Outcome, watcher: Watcher) -> Outcome:
    out.processes = len(watcher.peak_kib)
    out.extra["programs"] = dict(Counter(_program(c) for c in watcher.command.values()))
    out.all_mib = max(watcher.peak_kib.values(), default=0) / 1024 or None
    return out


def _progress(result_path: Path) -> str:
    """How far the ServerApp got (it writes a progress file after every round)."""
    path = Path(str(result_path) + ".progress")
    if not path.exists():
        return ": no round finished"
    done = json.loads(path.read_text())
    seconds, rounds = done["train_time_s"], done["rounds"]
    return f": {rounds} rounds done in {seconds:.0f} s of training ({seconds / rounds:.1f} s/round)"


def _flower_home(scratch: Path, port: int) -> Path:
    """A private Flower configuration naming the local SuperLink (never the user's ~/.flwr)."""
    home = scratch / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    return home


def run_flower(
    peers_bin: Path, run_config: dict[str, Any], clients: int, scratch: Path, timeout_s: float
) -> Outcome:
    """SuperLink + ``clients`` SuperNodes + ``flwr run``; the ServerApp writes the result."""
    out = Outcome(
        f"Flower {run_config.get('flwr', '')} (SuperLink + {clients} SuperNodes)".replace("  ", " ")
    )
    link_port, *node_ports = free_ports(clients + 1)
    result_path = scratch / "flower-result.json"
    home = _flower_home(scratch, link_port)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {**ONE_THREAD, "FLWR_HOME": str(home), "PATH": f"{peers_bin}:{env.get('PATH', '')}"}
    config = run_config | {"result-path": str(result_path)}
    config.pop("flwr", None)
    config.pop("scenario", None)
    overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
    group = Group(scratch, env)
    watcher = Watcher()
    deadline = time.monotonic() + timeout_s
    start = time.perf_counter()
    try:
        link = group.start("superlink", [str(peers_bin / "flower-superlink"), "--insecure",
                                         "--database", str(scratch / "state.db"),
                                         "--port", str(link_port)], cwd=scratch)  # fmt: skip
        watcher.roots.add(link.pid)
        watcher.start()
        wait_for_port(link_port, 120, link)
        for i, port in enumerate(node_ports):
            node_config = f"partition-id={i} num-partitions={clients}"
            node = group.start(f"supernode-{i}", [
                str(peers_bin / "flower-supernode"), "--insecure", "--superlink",
                f"127.0.0.1:{link_port}", "--port", str(port), "--node-config", node_config,
            ], cwd=scratch)  # fmt: skip
            watcher.roots.add(node.pid)
        flwr_run = [str(peers_bin / "flwr"), "run", str(APP), "bench", "--run-config", overrides]
        submit = group.start("flwr-run", [*flwr_run, "--stream"], cwd=scratch)
        while not result_path.exists():
            if time.monotonic() > deadline:
                out.error = f"no result within {timeout_s:.0f} s{_progress(result_path)}"
                break
            if submit.poll() not in (None, 0) or link.poll() is not None:
                why = tail(scratch / "flwr-run.log") or tail(scratch / "superlink.log")
                out.error = f"Flower stopped before the last round: {why}"
                break
            time.sleep(0.1)
        else:
            out.wall_s = time.perf_counter() - start
    finally:
        group.stop()
        watcher.stop()
    out.coordinator_mib, out.coordinator_what = watcher.peak_mib(link.pid), "flower-superlink"
    if out.error is not None:  # what the processes held until then is still a measurement
        peak = f"{out.coordinator_mib:.0f}" if out.coordinator_mib else "?"
        out.error += f" (SuperLink peak RSS until then: {peak} MiB)"
        return _tree(out, watcher)
    result = json.loads(result_path.read_text())
    out.train_s, out.final_accuracy = result["train_time_s"], result["final_accuracy"]
    serverapp = result.get("serverapp_pid")
    out.extra = {"serverapp_mib": watcher.peak_mib(serverapp) if serverapp else None,
                 "rounds": result["rounds"], "accuracies": result["accuracies"]}  # fmt: skip
    return _tree(out, watcher)
