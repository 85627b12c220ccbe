"""Aggregator speed: phalanx's robust aggregators against ByzFL's and Flower's versions of
the same rules, on the same inputs, in the same run.

    .venv/bin/python benchmarks/aggregator_speed.py          # peers: make bench-peers
    .venv/bin/python benchmarks/aggregator_speed.py --n 10 50 --d 100000 --only krum median

Every rule at n in {10, 50, 100} clients and d in {1e5, 1e6} parameters: seconds per call
(median of interleaved rounds), each peer's time as a multiple of ours, and the largest
absolute difference between its output and ours on the same inputs, so that "the same
rule" is checked, not assumed. Prints a table and writes it to docs/aggregator_speed.md
and .json. The measuring runs in a child process started with OpenMP, MKL and OpenBLAS
pinned to one thread (they read that when numpy and torch load, so the parent cannot set
it for itself) and ``torch.set_num_threads(1)``: every contender gets one core. The
parameter matching is described in ``_aggregator_rules.py``; the measuring rules in
``_aggregator_child.py``. Without the peers installed it times ours alone and says how to
install them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _report import machine_info

BENCH_DIR = Path(__file__).resolve().parent
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# Why outputs that should agree can differ (found by inspecting the differing coordinates).
EXPLAIN = {
    "bulyan": "in each, the beta-th and (beta+1)-th values closest to the median are equally "
    "close (a float32 tie) and each library keeps a different one: both are valid Bulyan "
    "outputs",
}
PEERS = ("ByzFL", "Flower")
HEADERS = ("rule", "n", "d", "phalanx s", *(
    f"{peer} {what}" for peer in PEERS for what in ("s", "/ ours", "max Δ")
))  # fmt: skip
SHORT = {"numpy": "np", "torch": "pt"}
CHOICES = (
    "f = floor((n - 3) / 4), the largest f with Bulyan's n >= 4f + 3, for every rule: "
    "f = 1, 11, 24 at n = 10, 50, 100",
    "ByzFL is timed on a numpy array (np) and a torch tensor (pt); the faster is shown",
    "equal weights (ByzFL takes none); Multi-Krum averages the n - f best rows",
    "ByzFL's Krum scores a row by its n - f - 1 nearest neighbours, the paper (Flower, "
    "ours) by n - f - 2; the max Δ column shows whether it picked another row",
    "trimmed mean drops f per side (Flower: proportiontocut = (f + 0.5) / n)",
    "geometric median: 10 Weiszfeld steps, nu = 1e-6 (ours: tol = 0)",
    "centred clipping: 3 steps from zero, tau = median row norm",
    "steps in front of the plain mean: NNM(f), clipping at the median row norm, ARC(f), "
    "buckets of 2",
    "inputs: honest rows g + 0.5 z, f Byzantine rows -5 g (last), float32",
)


class Notes:
    """Footnotes by first appearance, so each reason is written once."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if value < 0.1 else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def peer_cells(case: dict[str, Any], peer: str, notes: Notes) -> list[str]:
    """(time, ratio to ours, difference) for ``peer``'s fastest format, or dashes + note."""
    ours = case["contenders"][0]
    entries = [c for c in case["contenders"] if c["peer"] == peer]
    timed = [c for c in entries if c["median_s"] is not None]
    if not timed:
        reasons = "; ".join(dict.fromkeys(f"{c['format']} {c['note']}".strip() for c in entries))
        return [f"— {notes.mark(reasons)}", "—", "—"]
    best = min(timed, key=lambda c: c["median_s"])
    time_text = seconds(best["median_s"]) + once(best, notes)
    if len(entries) > 1:
        time_text += f" {SHORT.get(best['format'], best['format'])}"
    for other in entries:
        if other is not best and other["note"].startswith(("skipped", "failed")):
            time_text += " " + notes.mark(f"{peer} {other['format']}: {other['note']}")
    ratio = f"{best['median_s'] / ours['median_s']:.1f}x" if ours["median_s"] else "—"
    diff, differing = best["max_abs_diff"], best["coords_differing"]
    diff_text = "—" if diff is None else f"{diff:.0e}"
    if differing:
        why = EXPLAIN.get(case["rule"], "not explained")
        diff_text += " " + notes.mark(
            f"{peer} {case['rule']}, n={case['n']}, d={case['d']:,}: {differing:,} of "
            f"{case['d']:,} coordinates differ from ours; {why}"
        )
    return [time_text, ratio, diff_text]


def once(entry: dict[str, Any], notes: Notes) -> str:
    """A mark when the time is a single call (it alone outlasted the per-call budget)."""
    if "timed once (the first call)" not in entry["note"]:
        return ""
    return " " + notes.mark("one call, timed once: it alone outlasts the per-call budget")


def rows(result: dict[str, Any], notes: Notes) -> list[list[str]]:
    out = []
    for case in result["cases"]:
        ours = case["contenders"][0]
        base = [case["rule"], str(case["n"]), f"{case['d']:.0e}".replace("e+0", "e")]
        ours_text = seconds(ours["median_s"]) + once(ours, notes)
        if ours["median_s"] is None:
            ours_text = f"— {notes.mark('phalanx ' + ours['note'])}"
        out.append([*base, ours_text, *(c for p in PEERS for c in peer_cells(case, p, notes))])
    return out


def render(console: Console, result: dict[str, Any]) -> Notes:
    notes = Notes()
    table = Table(title="aggregator seconds per call (median); peer / phalanx > 1: ours faster")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "rule" else "right")
    body = rows(result, notes)
    for row, after in zip(body, [*body[1:], None], strict=True):
        table.add_row(*row, end_section=after is not None and after[1:3] != row[1:3])
    console.print(table)
    for index, text in enumerate(notes.texts, 1):
        console.print(f"[{index}] {text}", markup=False)
    return notes


def to_markdown(result: dict[str, Any], info: dict[str, Any]) -> str:
    notes = Notes()
    body = rows(result, notes)
    lines = [
        "Seconds per call of each aggregator (median of interleaved rounds, one thread each), "
        "each peer's time as a multiple of ours (> 1: ours is faster), and max Δ, the largest "
        "absolute difference between the peer's output and ours on the same inputs. "
        "`make bench-aggregators` (or `benchmarks/aggregator_speed.py` once "
        "`make bench-peers` has run).",
        "",
        f"| {' | '.join(HEADERS)} |",
        "|---|" + "---:|" * (len(HEADERS) - 1),
    ]
    lines += [f"| {' | '.join(row)} |" for row in body]
    lines += ["", *(f"- [{i}] {text}" for i, text in enumerate(notes.texts, 1))]
    lines += ["", "Matched parameters:", "", *(f"- {choice}" for choice in CHOICES)]
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in result["peers"].items())
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    lines += ["", f"_{versions}; {machine}; one thread per contender; medians._", ""]
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the child and return its JSON document."""
    argv = [sys.executable, str(BENCH_DIR / "_aggregator_child.py"),
            "--n", *map(str, args.n), "--d", *map(str, args.d), "--only", *args.only,
            f"--repeats={args.repeats}", f"--budget-s={args.budget_s}",
            f"--max-call-s={args.max_call_s}", f"--max-bytes={args.max_gib * 2**30}",
            f"--seed={args.seed}"]  # fmt: skip
    done = subprocess.run(
        argv, env={**os.environ, **THREADS}, stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the measuring child failed with exit code {done.returncode}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--d", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--only", nargs="+", default=[], metavar="RULE")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=8.0, help="timed seconds per call")
    parser.add_argument("--max-call-s", type=float, default=60.0)
    parser.add_argument("--max-gib", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=Path("docs/aggregator_speed.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/aggregator_speed.json"))
    parser.add_argument("--from-json", type=Path, help="render a saved run, measure nothing")
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log or a pipe: do not squeeze the table to 80
    if args.from_json:  # re-render a finished run (the tables, notes, markdown)
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        result, info = saved, saved.pop("machine")
    else:
        console.print(f"measuring in a child process (threads pinned to 1): n={args.n}, d={args.d}")
        result, info = measure(args), machine_info(args.repeats)
    render(console, result)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(to_markdown(result, info), encoding="utf-8")
    args.json.write_text(json.dumps({**result, "machine": info}, indent=1), encoding="utf-8")
    console.print(f"wrote {args.markdown} and {args.json}")


if __name__ == "__main__":
    main()
