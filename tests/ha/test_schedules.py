"""Two seeded random fault schedules against a real failover group (the benchmark plays a
hundred): seed 0 (3-member etcd: leader SIGKILL, etcd quorum lost, leader cut off) and
seed 6 (1 member: leader paused twice, a crash right after a commit transaction). Each must
finish for every coordinator, on one chain of commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.testing.failover.runner import Schedule, ScheduleRun


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [0, 6])
def test_a_random_schedule_finishes_on_one_chain(seed: int, tmp_path: Path) -> None:
    schedule = Schedule.draw(seed)
    outcome = ScheduleRun(schedule, tmp_path, deadline_s=240).run()
    assert outcome.completed, outcome.notes
    assert outcome.one_chain, outcome.verdict.violations
    assert outcome.verdict.rounds == schedule.rounds
