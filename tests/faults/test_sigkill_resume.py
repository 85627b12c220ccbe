"""SIGKILL a real coordinator process at random instants, resume it every time, and end
with exactly the model and the committed history of a run that was never interrupted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.kill_driver import KillReport, KillResumeDriver

KILLS = 20


def summary(report: KillReport) -> str:
    return (
        f"{len(report.kills)} kills, {report.landed} landed "
        f"({report.landed_by('crash point')} at crash points), {report.resumes} resumes, "
        f"{report.wall_s:.1f} s"
    )


def check(report: KillReport, *, min_landed: int, min_crash_points: int) -> None:
    assert report.wrong_exits == 0, summary(report)  # no exit 0 with another model, ever
    assert report.identical_params, summary(report)
    assert report.final.model_version == report.reference.model_version, summary(report)
    assert report.final.round == report.reference.round, summary(report)
    assert report.identical_history, summary(report)
    assert report.landed >= min_landed, summary(report)
    assert report.landed_by("crash point") >= min_crash_points, summary(report)


@pytest.mark.timeout(360)  # about 45 processes: a minute alone, more on a loaded machine
def test_twenty_sigkills_resume_to_the_identical_model(tmp_path: Path) -> None:
    report = KillResumeDriver(tmp_path, rounds=100).run(KILLS)
    check(report, min_landed=15, min_crash_points=4)  # of 6


@pytest.mark.timeout(240)
def test_sigkills_in_a_directory_of_an_earlier_run_end_with_this_runs_model(
    tmp_path: Path,
) -> None:
    """The directory first holds a finished, longer run of another seed: ``--out`` refuses
    it, ``--force`` clears it, and no kill, refusal or resume ever mixes the two runs."""
    report = KillResumeDriver(tmp_path, rounds=40, seed=99).run(6, reuse_seed=7)
    check(report, min_landed=4, min_crash_points=1)
    assert report.attempts[0].refused == 2  # --out on the earlier run, before --force


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PHALANX_SLOW") != "1", reason="set PHALANX_SLOW=1 to run")
@pytest.mark.timeout(900)
def test_thirty_sigkills_in_a_reused_directory(tmp_path: Path) -> None:
    report = KillResumeDriver(tmp_path, rounds=150, seed=4321).run(30, reuse_seed=7)
    check(report, min_landed=22, min_crash_points=6)  # of 10


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PHALANX_SLOW") != "1", reason="set PHALANX_SLOW=1 to run")
@pytest.mark.timeout(900)
def test_a_hundred_sigkills_resume_to_the_identical_model(tmp_path: Path) -> None:
    report = KillResumeDriver(tmp_path, rounds=300).run(100)
    check(report, min_landed=75, min_crash_points=25)  # of 33
