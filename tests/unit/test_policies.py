"""Engine policies on tiny literal inputs: retry, selection, health, quorum."""

from __future__ import annotations

import pytest

from phalanx.config import HealthConfig, QuorumConfig, RetryConfig, SelectionConfig
from phalanx.core.state import ClientHealth
from phalanx.engine.health import HealthMonitor
from phalanx.engine.health_index import HealthIndex
from phalanx.engine.retry import RetryPolicy
from phalanx.engine.selection import sample_clients
from phalanx.types import FailureKind, HealthState


def test_backoff_full_jitter_stays_under_the_exponential_cap() -> None:
    policy = RetryPolicy(RetryConfig(base_delay_s=1.0, max_delay_s=5.0), seed=1)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [policy.backoff(r, 3, attempt) for r in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > 0.8 * cap  # jitter spreads over the whole range


def test_backoff_is_a_pure_function_of_round_client_attempt() -> None:
    a = RetryPolicy(RetryConfig(), seed=5)
    b = RetryPolicy(RetryConfig(), seed=5)
    assert a.backoff(4, 2, 1) == b.backoff(4, 2, 1)
    assert a.backoff(4, 2, 1) != a.backoff(4, 3, 1)


def test_retry_only_transient_kinds_within_attempts_and_deadline() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=2, base_delay_s=1.0), seed=0)
    common = {"round_index": 0, "client": 1, "now": 10.0}
    assert policy.next_attempt_at(FailureKind.CRASH, attempt=1, round_deadline=99, **common)
    assert policy.next_attempt_at(FailureKind.DROP, attempt=1, round_deadline=99, **common)
    assert policy.next_attempt_at(FailureKind.CRASH, attempt=2, round_deadline=99, **common) is None
    assert (
        policy.next_attempt_at(FailureKind.TIMEOUT, attempt=1, round_deadline=99, **common) is None
    )
    assert (
        policy.next_attempt_at(FailureKind.CRASH, attempt=1, round_deadline=10.0, **common) is None
    )


def test_rejected_updates_can_never_be_configured_for_retry() -> None:
    with pytest.raises(ValueError, match="rejected"):
        RetryConfig(retry_on=(FailureKind.REJECTED,))


def test_selection_is_seeded_distinct_and_order_independent() -> None:
    pick = sample_clients([4, 1, 3, 2, 0], 3, seed=9, round_index=2, stream="select")
    assert len(set(pick)) == 3 and set(pick) <= {0, 1, 2, 3, 4}
    assert pick == sample_clients([0, 1, 2, 3, 4], 3, seed=9, round_index=2, stream="select")
    assert sample_clients([1, 2], 5, seed=9, round_index=2, stream="select") in ([1, 2], [2, 1])
    assert sample_clients([], 3, seed=9, round_index=2, stream="select") == []


def test_over_selection_rounds_up() -> None:
    assert SelectionConfig(clients_per_round=10, over_selection=1.3).dispatch_count == 13
    assert SelectionConfig(clients_per_round=10, over_selection=1.0).dispatch_count == 10
    assert SelectionConfig(clients_per_round=3, over_selection=1.5).dispatch_count == 5


def test_quorum_takes_the_stricter_of_absolute_and_fraction() -> None:
    assert QuorumConfig(min_updates=5, min_fraction=0.0).required(10) == 5
    assert QuorumConfig(min_updates=2, min_fraction=0.7).required(10) == 7


def test_health_sidelines_after_repeated_failures_then_probes_and_readmits() -> None:
    monitor = HealthMonitor(HealthConfig(decay=0.5, sideline_below=0.2, cooldown_rounds=2))
    health = ClientHealth()
    health = monitor.failure(health, round_index=0)  # 0.5
    health = monitor.failure(health, round_index=0)  # 0.25
    assert health.state is HealthState.HEALTHY
    health = monitor.failure(health, round_index=1)  # 0.125: sidelined for rounds 2, 3
    assert health.state is HealthState.SIDELINED and health.sidelined_until == 4
    index = HealthIndex({7: health, 8: ClientHealth()}, 3, is_live=lambda client: True)
    index.open_round(3)
    assert index.table[7].state is HealthState.SIDELINED
    assert (list(index.healthy), list(index.probation)) == ([8], [])
    index.close_round()
    index.open_round(4)
    assert index.table[7].state is HealthState.PROBATION
    assert (list(index.healthy), list(index.probation)) == ([8], [7])
    back = monitor.success(index.table[7])
    assert back.state is HealthState.HEALTHY and back.score >= 0.6


def test_relapse_on_probation_doubles_the_cooldown() -> None:
    monitor = HealthMonitor(HealthConfig(cooldown_rounds=3, max_cooldown_rounds=5))
    probing = ClientHealth(score=0.1, state=HealthState.PROBATION, cooldown=3)
    again = monitor.failure(probing, round_index=10)
    assert again.state is HealthState.SIDELINED
    assert again.cooldown == 5  # 6, capped at 5
    assert again.sidelined_until == 16
