"""f accounting: an update validation refused as proof of a faulty sender comes off the
round's f (``round_f``), so the rule neither tolerates it twice nor refuses a round that
has enough rows for the faults that are left. A checksum mismatch (the link's doing) and
the relative norm bound (which colluders can steer) take nothing off."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.aggregation.base import SENDER_FAULTS, round_f
from phalanx.simulation import Simulation
from phalanx.types import RejectReason
from tests.scenario.conftest import BASE, tiny_config

# Five clients, all asked, nobody to replace a refused update: median with f = 2 needs all
# five rows (n >= 2f + 1), and with f = 1 three.
TREE: dict[str, Any] = {
    **BASE,
    "rounds": 2,
    "workload": {**BASE["workload"], "num_clients": 5},
    "selection": {"clients_per_round": 5, "over_selection": 1.0},
    "quorum": {"min_updates": 3},
    "aggregation": {"name": "median", "f": 2},
    "faults": {"enabled": True, "schedule": [{"round": 0, "client": 3, "kind": "corrupt"}]},
}


def run(corruption: str) -> list[dict[str, Any]]:
    config = tiny_config(f"faults.corruptions=['{corruption}']", tree=TREE)
    return Simulation(config).run().history


def test_a_refused_nan_update_comes_off_f_and_the_round_commits() -> None:
    first, second = run("nan")
    assert first["rejections"] == {"non_finite": 1} and 3 not in first["accepted"]
    assert first["committed"] and first["effective_f"] == 1
    assert second["committed"] and "effective_f" not in second  # the configured f again


def test_a_checksum_mismatch_takes_nothing_off_f() -> None:
    first, _ = run("bitflip")
    assert first["rejections"] == {"checksum": 1}
    assert not first["committed"] and "effective_f" not in first
    assert first["reasons"] == ["aggregation failed: median needs n >= 2f + 1; got n=4, f=2"]


def test_round_f_counts_distinct_faulty_senders_down_to_zero() -> None:
    nan, norm = RejectReason.NON_FINITE, RejectReason.NORM_ABSOLUTE
    assert round_f(3, [(1, nan), (1, norm), (2, RejectReason.SCHEMA)]) == 1
    assert round_f(1, [(1, nan), (2, nan)]) == 0
    assert round_f(2, [(1, None), (2, RejectReason.VERSION)]) == 2


@pytest.mark.parametrize(
    "reason",
    [RejectReason.CHECKSUM, RejectReason.NORM_RELATIVE, RejectReason.VERSION,
     RejectReason.ROUND, RejectReason.SENDER],
)  # fmt: skip
def test_rejections_an_honest_client_or_the_colluders_can_cause_do_not_count(
    reason: RejectReason,
) -> None:
    assert reason not in SENDER_FAULTS
    assert round_f(2, [(7, reason)]) == 2
