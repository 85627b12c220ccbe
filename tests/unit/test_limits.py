"""Per-client token buckets on an injected clock: a burst, then the rate; bytes may go into
debt for one upload and are paid back at the rate; clients do not share buckets; memory is
bounded in the clients tracked; nonsense limits are refused."""

from __future__ import annotations

import pytest

from phalanx.errors import BusyError, ConfigError
from phalanx.runtime.grpc.limits import ClientLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = ClientLimiter(calls_per_s=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.charge(1)
    with pytest.raises(BusyError, match=r"client 1: over 2 calls/s \(burst 3\); retry in 0.50 s"):
        limiter.charge(1)
    limiter.charge(2)  # another client has its own bucket
    clock.now += 0.5
    limiter.charge(1)
    with pytest.raises(BusyError):
        limiter.charge(1)
    clock.now += 100.0  # refills only up to the burst
    for _ in range(3):
        limiter.charge(1)
    with pytest.raises(BusyError):
        limiter.charge(1)


def test_a_refused_call_costs_nothing() -> None:
    clock = Clock()
    limiter = ClientLimiter(calls_per_s=1.0, burst=1, clock=clock)
    limiter.charge(1)
    for _ in range(5):
        with pytest.raises(BusyError):
            limiter.charge(1)
    clock.now += 1.0
    limiter.charge(1)


def test_bytes_go_into_debt_for_one_upload_and_are_paid_back() -> None:
    clock = Clock()
    limiter = ClientLimiter(calls_per_s=0, burst=0, bytes_per_s=1000, clock=clock)
    limiter.charge(1, 5000)  # 4000 bytes in debt
    limiter.charge(1)  # calls without bytes are not byte-limited
    with pytest.raises(BusyError, match=r"over 1000 bytes/s; retry in 4.00 s"):
        limiter.charge(1, 10)
    clock.now += 3.9
    with pytest.raises(BusyError):
        limiter.charge(1, 10)
    clock.now += 0.2
    limiter.charge(1, 10)


def test_a_clock_that_steps_back_gives_no_credit() -> None:
    clock = Clock()
    limiter = ClientLimiter(calls_per_s=1.0, burst=1, clock=clock)
    limiter.charge(1)
    clock.now -= 50.0
    with pytest.raises(BusyError):
        limiter.charge(1)


def test_memory_is_bounded_in_the_clients_tracked() -> None:
    clock = Clock()
    limiter = ClientLimiter(calls_per_s=1.0, burst=1, max_clients=100, clock=clock)
    limiter.charge(0)
    for client in range(1, 10_000):
        limiter.charge(client)
        assert len(limiter) <= 100
    with pytest.raises(BusyError):  # recently charged: still tracked, still limited
        limiter.charge(9_999)
    limiter.charge(0)  # long evicted: a fresh bucket
    limiter.forget(9_999)
    limiter.charge(9_999)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"calls_per_s": -1.0, "burst": 1},
        {"calls_per_s": float("nan"), "burst": 1},
        {"calls_per_s": 1.0, "burst": 0},
        {"calls_per_s": 1.0, "burst": 1, "max_clients": 0},
    ],
)
def test_nonsense_limits_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ClientLimiter(**kwargs)  # type: ignore[arg-type]
