"""f accounting: an update validation refused as proof of a faulty sender comes off the
round's f (``round_f``), so the rule neither tolerates it twice nor refuses a round that
has enough rows for the faults that are left. A checksum mismatch (the link's doing) and
the relative norm bound (which colluders can steer) take nothing off."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.aggregation.base import SENDER_FAULTS, refused_relative, round_f
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


# Eight clients, all asked; persistent_flags set to flag the f = 2 least aligned rows every
# round (no drift, a threshold of almost 0, any cosine): a step that flags some row whatever
# the round holds.
_FLAG_EVERY_ROUND = {"drift": 0.0, "threshold": 1e-9, "max_cosine": 1.0}
FLAGGING: dict[str, Any] = {
    **BASE,
    "rounds": 3,
    "selection": {"clients_per_round": 8, "over_selection": 1.0},
    "aggregation": {
        "name": "centered_clipping",
        "f": 2,
        "pre": [{"name": "persistent_flags", "params": _FLAG_EVERY_ROUND}],
    },
}


def flagging_run(fraction: float) -> list[dict[str, Any]]:
    byzantine = {"fraction": fraction, "attack": "scaling"}
    tree = {**FLAGGING, "faults": {"enabled": True, "byzantine": byzantine}}
    return Simulation(tiny_config(tree=tree)).run().history


def test_clients_refused_on_the_relative_norm_come_off_the_rows_flags_may_take() -> None:
    # Without attackers the step flags two honest clients a round; with the two scaling
    # attackers refused on the relative norm bound, the rows left are honest and f less
    # the refused leaves nothing to flag (f itself stays 2 for the rule).
    clean = flagging_run(0.0)
    assert [len(record["flagged"]) for record in clean[1:]] == [2, 2]
    attacked = flagging_run(0.25)
    for record in attacked:
        assert record["rejections"] == {"norm_relative": 2} and record["committed"]
        assert record["flagged"] == [] and "effective_f" not in record


def test_refused_relative_counts_distinct_clients_refused_on_the_relative_norm() -> None:
    relative, nan = RejectReason.NORM_RELATIVE, RejectReason.NON_FINITE
    assert refused_relative([(1, relative), (1, relative), (2, relative), (3, nan)]) == 2
    assert refused_relative([(1, None), (2, RejectReason.CHECKSUM)]) == 0
