"""The incremental health index: sets kept in step with the table, cool-downs ended by a heap,
selection by rank that matches sampling the sorted set."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sortedcontainers import SortedList

from phalanx.config import HealthConfig
from phalanx.core.state import ClientHealth
from phalanx.engine.health import HealthMonitor
from phalanx.engine.health_index import HealthIndex
from phalanx.engine.membership import MemberChange, Roster
from phalanx.engine.selection import (
    at_ranks,
    rank_excluding,
    sample_clients,
    sample_one_excluding,
)
from phalanx.errors import StaleStateError
from phalanx.types import HealthState

SIDELINED = ClientHealth(state=HealthState.SIDELINED, sidelined_until=5, cooldown=3)
PROBATION = ClientHealth(state=HealthState.PROBATION)


def index_of(table: dict[int, ClientHealth], live: set[int] | None = None) -> HealthIndex:
    return HealthIndex(table, 4, is_live=lambda c: live is None or c in live)


def test_sets_follow_each_change_and_only_live_clients_are_selectable() -> None:
    index = index_of({0: ClientHealth(), 1: PROBATION, 2: SIDELINED, 3: ClientHealth()}, {0, 1, 2})
    assert (list(index.healthy), list(index.probation)) == ([0], [1])
    index.set(0, SIDELINED)
    index.set(1, ClientHealth())
    assert (list(index.healthy), list(index.probation)) == ([1], [])
    assert index.opening(0) == ClientHealth() and index.opening(1) == PROBATION


def test_a_cooldown_ends_at_its_round_and_a_stale_wakeup_is_ignored() -> None:
    index = index_of({2: SIDELINED, 3: SIDELINED})
    index.set(3, ClientHealth(state=HealthState.SIDELINED, sidelined_until=9, cooldown=6))
    index.open_round(5)
    assert list(index.probation) == [2] and index.table[3].state is HealthState.SIDELINED
    index.open_round(9)
    assert list(index.probation) == [2, 3]


def test_a_probe_that_draws_a_flag_is_sidelined_for_twice_as_long() -> None:
    # Regression: the round's opening health of a client woken to probation was its
    # sidelined record from before the wake-up, so a flag on its probe kept the cool-down
    # that had just ended and the client was probed (and aggregated) every round after.
    monitor = HealthMonitor(HealthConfig(cooldown_rounds=1))
    index = index_of({0: ClientHealth(), 2: SIDELINED})  # sidelined until round 5, cooldown 3
    index.open_round(5)
    assert index.opening(2) == replace(SIDELINED, state=HealthState.PROBATION)
    index.set(2, monitor.success(index.table[2]))  # the probe's update was accepted
    monitor.apply_flags(index, [2], 5, floor=0, set_health=index.set)
    flagged = index.table[2]
    assert flagged.state is HealthState.SIDELINED
    assert (flagged.cooldown, flagged.sidelined_until) == (6, 12)
    for round_index in range(6, 12):
        index.close_round()
        index.open_round(round_index)
        assert 2 not in index.probation
    index.close_round()
    index.open_round(12)
    assert list(index.probation) == [2]


def test_joins_and_leaves_reach_the_sets_and_a_returning_client_keeps_its_record() -> None:
    index = index_of({0: ClientHealth(), 1: ClientHealth(score=0.4)})
    left = index.apply([MemberChange(1, joined=False), MemberChange(7, joined=True)])
    assert left == [1] and list(index.healthy) == [0, 7] and index.table[7] == ClientHealth()
    assert index.apply([MemberChange(1, joined=True)]) == []
    assert list(index.healthy) == [0, 1, 7] and index.table[1].score == 0.4


def test_a_round_from_a_superseded_state_is_refused() -> None:
    table = {0: ClientHealth()}
    index = HealthIndex(table, 3, is_live=lambda c: True)
    assert index.table is not table  # indexed as a copy: the caller's table stays as it was
    assert index.current_for(index.table, 3) and not index.current_for(table, 2)
    index.close_round()
    with pytest.raises(StaleStateError, match="round 3 started from a state"):
        index.current_for(index.table, 3)
    again = HealthIndex(index.table, 4, is_live=lambda c: True)  # another engine's index
    with pytest.raises(StaleStateError, match="moved on to round 4"):
        again.current_for(index.table, 2)


@given(
    st.sets(st.integers(0, 200), min_size=1, max_size=60),
    st.data(),
    st.integers(0, 10**6),
)
def test_replacement_by_rank_draws_what_sampling_the_difference_draws(
    pool: set[int], data: st.DataObject, seed: int
) -> None:
    excluded = data.draw(st.sets(st.sampled_from(sorted(pool)), max_size=len(pool)))
    fresh = sorted(pool - excluded)
    expected = sample_clients(fresh, 1, seed=seed, round_index=3, stream="replace/0")
    got = sample_one_excluding(
        SortedList(pool), SortedList(excluded), seed=seed, round_index=3, stream="replace/0"
    )
    assert [got] == expected if expected else got is None
    for rank, client in enumerate(fresh):
        assert rank_excluding(SortedList(pool), SortedList(excluded), rank) == client


def test_a_roster_reports_joins_and_leaves_once_and_in_order() -> None:
    roster = Roster([0, 1], declared={0: 10}.get)
    roster.join(2, declared_examples=5)
    roster.join(2)
    roster.leave(0)
    roster.leave(0)
    assert roster.changes() == [MemberChange(2, True), MemberChange(0, False)]
    assert list(roster.changes()) == []
    assert (roster.live_count(), roster.is_live(0), roster.declared_examples(2)) == (2, False, 5)
    assert sorted(roster.registered()) == [0, 1, 2] and roster.declared_examples(1) is None


POPULATION = SortedList(range(0, 30_000, 3))  # 10,000 clients: ten sublists


@given(st.lists(st.integers(0, len(POPULATION) - 1), min_size=64, max_size=300, unique=True))
def test_many_ranks_read_in_one_pass_are_what_indexing_reads(ranks: list[int]) -> None:
    """A round's first wave reads thousands of ranks: in draw order, across sublists."""
    assert len(POPULATION._lists) > 1  # the pass crosses sublists
    assert at_ranks(POPULATION, ranks) == [POPULATION[r] for r in ranks]
    assert at_ranks(list(POPULATION), ranks[:3]) == [POPULATION[r] for r in ranks[:3]]
