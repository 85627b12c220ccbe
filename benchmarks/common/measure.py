"""Run one child process and reduce its runs to numbers: wall time, peak RSS, medians;
read its JSON report; say which machine measured it.

Kept apart from the contenders so the measuring rules (temp files instead of pipes, rusage
from ``os.wait4``, a timer that kills the child's own session) are in one short place.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Every measured child runs its math libraries on one thread; they read this when they load,
# so it must be in the child's environment, not set by the child itself.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def last_json_line(stdout: str) -> dict[str, Any]:
    """A child's report: the last stdout line that parses as a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return dict(json.loads(line))
    raise ValueError("no JSON report on stdout")


def machine_info(repeats: int) -> dict[str, Any]:
    """Enough context to know whether two result files are comparable."""
    return {
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "repeats": repeats,
    }


# --- running one child -------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    """What the parent saw of one child process."""

    returncode: int
    wall_s: float
    maxrss_kib: int
    stdout: str
    stderr: str
    timed_out: bool


def _kill_group(pid: int) -> None:
    """Kill the session we started for a child (the child and its own workers only)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_child(argv: list[str], timeout_s: float, cwd: Path) -> ChildRun:
    """Run ``argv`` to completion; time it and take its rusage from ``os.wait4``.

    Output goes to temporary files rather than pipes, so the parent never has to read
    while it waits and no reader thread competes with the child for a core.
    """
    env = {**os.environ, **ONE_THREAD}
    fired = threading.Event()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )

        def expire() -> None:
            fired.set()
            _kill_group(proc.pid)

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _kill_group(proc.pid)
            os.wait4(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        wall_s = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            returncode=proc.returncode,
            wall_s=wall_s,
            maxrss_kib=usage.ru_maxrss,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=fired.is_set(),
        )


# --- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One run's numbers, or why there are none."""

    whole_s: float | None = None
    train_s: float | None = None
    rss_mib: float | None = None
    accuracy: float | None = None
    error: str | None = None


def failure_reason(run: ChildRun, timeout_s: float) -> str | None:
    """A one-line reason the child failed, or None when it exited cleanly."""
    if run.timed_out:
        return f"timed out after {timeout_s:.0f} s"
    if run.returncode != 0:
        tail = run.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        return f"exit {run.returncode}: {tail[0][:160]}"
    return None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[Measurement]) -> Measurement:
    """Median of each number over the successful runs; failures are named in ``error``."""
    good = [r for r in runs if r.error is None]
    failed = [r for r in runs if r.error is not None]
    note = None
    if failed:
        note = failed[0].error if not good else f"{len(failed)}/{len(runs)} runs failed"
    if not good:
        return Measurement(error=note)
    return Measurement(
        whole_s=_median([r.whole_s for r in good]),
        train_s=_median([r.train_s for r in good]),
        rss_mib=_median([r.rss_mib for r in good]),
        accuracy=_median([r.accuracy for r in good]),
        error=note,
    )
