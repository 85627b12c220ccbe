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
    assert report.identical_params, summary(report)
    assert report.final.model_version == report.reference.model_version, summary(report)
    assert report.final.round == report.reference.round, summary(report)
    assert report.identical_history, summary(report)
    assert report.landed >= min_landed, summary(report)
    assert report.landed_by("crash point") >= min_crash_points, summary(report)


def test_twenty_sigkills_resume_to_the_identical_model(tmp_path: Path) -> None:
    report = KillResumeDriver(tmp_path, rounds=100).run(KILLS)
    check(report, min_landed=15, min_crash_points=4)  # of 6


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PHALANX_SLOW") != "1", reason="set PHALANX_SLOW=1 to run")
@pytest.mark.timeout(900)
def test_a_hundred_sigkills_resume_to_the_identical_model(tmp_path: Path) -> None:
    report = KillResumeDriver(tmp_path, rounds=300).run(100)
    check(report, min_landed=75, min_crash_points=25)  # of 33
