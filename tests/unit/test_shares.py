"""Workers' shares of the queue: balanced by cost, in queue order, never empty."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phalanx.runtime.inprocess.shares import planned_share


def test_equal_costs_alternate_between_idle_workers() -> None:
    assert planned_share([1.0] * 7, [0.0]) == [0, 2, 4, 6]
    assert planned_share([1.0] * 6, [0.0, 0.0]) == [0, 3]


def test_one_worker_takes_everything() -> None:
    assert planned_share([3.0, 1.0, 2.0], []) == [0, 1, 2]


def test_big_jobs_are_split_and_small_ones_fill_in() -> None:
    # 4 + 1 + 1 on each side, where counts alone would give one worker both big jobs
    assert planned_share([1.0, 1.0, 1.0, 1.0, 4.0, 4.0], [0.0]) == [0, 2, 4]


def test_a_busy_worker_leaves_more_to_the_idle_one() -> None:
    # the other worker still has 10 in hand: the asker takes all ten small jobs
    assert planned_share([1.0] * 10, [10.0]) == list(range(10))
    assert planned_share([1.0] * 10, [6.0]) == [0, 1, 2, 3, 4, 5, 6, 8]


@given(
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=40),
    st.lists(st.floats(0.0, 100.0), max_size=4),
)
def test_the_share_is_never_empty_and_within_one_job_of_a_fair_part(
    costs: list[float], others: list[float]
) -> None:
    share = planned_share(costs, others)
    assert share and share == sorted(set(share))
    assert all(0 <= i < len(costs) for i in share)
    fair = (sum(costs) + sum(others)) / (len(others) + 1)
    assert sum(costs[i] for i in share) <= fair + max(costs) + 1e-9
