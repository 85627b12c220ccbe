"""The seed-parity contenders: how each starts (a fresh scratch directory each run, the
repository root as its working directory) and how its numbers are read back."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common.measure import (
    REPO_ROOT,
    ChildRun,
    Measurement,
    failure_reason,
    last_json_line,
    run_child,
)
from benchmarks.parity.seed_program import SeedWorkspace

# --- contenders --------------------------------------------------------------------------


class ContenderError(RuntimeError):
    """A contender ran but did not produce its numbers."""


def read_json_report(run: ChildRun, scratch: Path) -> tuple[float, float]:
    """(train_s, accuracy) from the child's own JSON line (seed runner, plain loops)."""
    try:
        report = last_json_line(run.stdout)
    except ValueError as error:
        raise ContenderError(str(error)) from None
    return float(report["train_s"]), float(report["accuracy"])


def read_phalanx_summary(run: ChildRun, scratch: Path) -> tuple[float, float]:
    """(train_s, accuracy) from ``summary.json`` in the run's ``--out`` directory."""
    path = scratch / "summary.json"
    if not path.is_file():
        raise ContenderError(f"no summary.json in --out (found: {sorted(os.listdir(scratch))})")
    summary = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in ("train_time_s", "final_accuracy") if key not in summary]
    if missing:
        raise ContenderError(f"summary.json lacks {missing}; has {sorted(summary)}")
    return float(summary["train_time_s"]), float(summary["final_accuracy"])


@dataclass(frozen=True)
class Contender:
    """One row: how to start it (given a fresh scratch dir) and how to read its report."""

    key: str
    label: str
    argv: Callable[[Path], list[str]]
    read: Callable[[ChildRun, Path], tuple[float, float]]


def contenders(seed: SeedWorkspace | None) -> list[Contender]:
    """All rows, in run order. ``seed`` is None when the tutorial could not be extracted."""
    py = sys.executable
    # Like for like with the seed, which prints a summary and draws nothing: no progress
    # bar, no plots. The last row shows what drawing the two PNGs adds.
    phalanx = [py, "-m", "phalanx", "run", "--quiet", "--no-plots", "--out"]
    phalanx_plots = [py, "-m", "phalanx", "run", "--quiet", "--out"]
    plain = [py, "-m", "benchmarks.parity.plain_loops"]

    def seed_argv(_: Path) -> list[str]:
        if seed is None:
            raise ContenderError("seed tutorial not found under ../shared/seed/*.txt")
        return seed.argv(py)

    return [
        Contender("seed", "seed", seed_argv, read_json_report),
        Contender(
            "phalanx_on", "phalanx (faults on)", lambda d: [*phalanx, str(d)], read_phalanx_summary
        ),
        Contender(
            "phalanx_off",
            "phalanx (faults off)",
            lambda d: [*phalanx, str(d), "--set", "faults.enabled=false"],
            read_phalanx_summary,
        ),
        Contender(
            "plain_client",
            "plain loop, client by client",
            lambda _: [*plain, "client"],
            read_json_report,
        ),
        Contender(
            "plain_batched",
            "plain loop, batched (floor)",
            lambda _: [*plain, "batched"],
            read_json_report,
        ),
        Contender(
            "phalanx_plots",
            "phalanx (faults on, with plots)",
            lambda d: [*phalanx_plots, str(d)],
            read_phalanx_summary,
        ),
        Contender(
            "phalanx_default",
            "phalanx run (as typed: plots, progress lines)",
            lambda d: [py, "-m", "phalanx", "run", "--out", str(d)],
            read_phalanx_summary,
        ),
    ]


# --- measuring ---------------------------------------------------------------------------


def measure(contender: Contender, timeout_s: float) -> Measurement:
    """Run the contender once in a fresh scratch directory; never raises for its failures."""
    with tempfile.TemporaryDirectory(prefix=f"seed-parity-{contender.key}-") as tmp:
        scratch = Path(tmp)
        try:
            run = run_child(contender.argv(scratch), timeout_s, REPO_ROOT)
        except (ContenderError, OSError) as exc:
            return Measurement(error=str(exc))
        base = Measurement(whole_s=run.wall_s, rss_mib=run.maxrss_kib / 1024)
        error = failure_reason(run, timeout_s)
        if error is None:
            try:
                train_s, accuracy = contender.read(run, scratch)
                return Measurement(base.whole_s, train_s, base.rss_mib, accuracy)
            except (ContenderError, KeyError, TypeError, ValueError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        return Measurement(whole_s=base.whole_s, rss_mib=base.rss_mib, error=error)
