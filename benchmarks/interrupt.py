"""Ctrl-C in a long run: seconds from the signal to the process's exit, and what it left.

Starts ``phalanx run`` on the seed scenario with ``--set rounds=1000`` (a subprocess, as a
user runs it), waits until ``--after`` rounds are in history.jsonl, sends SIGINT (or
SIGTERM), and reports the time until the run stopped (summary.json written), the time to
exit (after drawing the plots and interpreter teardown), the exit code and the run
directory's files.

    .venv/bin/python -m benchmarks.interrupt [--rounds 1000] [--after 200] [--signal TERM]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def measure(rounds: int, after: int, sig: signal.Signals, out: Path) -> dict[str, str]:
    command = [
        sys.executable, "-m", "phalanx", "run", "--out", str(out), "--quiet",
        "--set", f"rounds={rounds}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    history = out / "history.jsonl"
    while not history.exists() or len(history.read_bytes().splitlines()) < after:
        if process.poll() is not None:
            raise SystemExit(f"the run ended before round {after}")
        time.sleep(0.005)
    sent = time.perf_counter()
    process.send_signal(sig)
    while not (out / "summary.json").exists() and process.poll() is None:
        time.sleep(0.001)
    stopped = time.perf_counter() - sent  # the run stopped; the plots are still to draw
    output, _ = process.communicate(timeout=120)
    seconds = time.perf_counter() - sent
    resume = "phalanx run --resume" in " ".join(output.decode().split())
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    lines = len(history.read_bytes().splitlines())
    return {
        "signal": sig.name,
        "seconds from signal to summary.json": f"{stopped:.3f}",
        "seconds from signal to exit": f"{seconds:.3f}",
        "exit code": str(process.returncode),
        "rounds in history.jsonl": str(lines),
        "resume command printed": "yes" if resume else "NO",
        "outputs present": ", ".join(f for f in files if not f.startswith(".")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--after", type=int, default=200)
    parser.add_argument("--signal", choices=["INT", "TERM"], nargs="+", default=["INT", "TERM"])
    args = parser.parse_args()
    table = Table(title=f"seed scenario, rounds={args.rounds}, signal after {args.after} rounds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.signal:
            sig = signal.Signals[f"SIG{name}"]
            rows.append(measure(args.rounds, args.after, sig, Path(tmp) / name))
    table.add_column("measure")
    for row in rows:
        table.add_column(row["signal"], overflow="fold")
    for key in rows[0]:
        if key != "signal":
            table.add_row(key, *(row[key] for row in rows))
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
