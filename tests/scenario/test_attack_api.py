"""The public attack API end to end: an attack registered by name runs in a simulation, and
a colluding one sees the round as it is -- honest updates under their real client ids, the
colluders and the selection, and the server's public state (model, carried momentum, rule).
The example in examples/ runs as a test."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
import torch

import phalanx
from phalanx import ColludingAttack, ModelAttack, RoundView, register_attack, unregister_attack
from phalanx.errors import ConfigError
from phalanx.faults.byzantine import ATTACKS
from phalanx.simulation import Simulation
from tests.scenario.conftest import BASE, tiny_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_attack.py"
CENTRE = "centered_clipping.centre"


class Probe(ColludingAttack):
    """Send the honest mean, and keep every view (the test reads them)."""

    name: ClassVar[str] = "probe"
    seen: ClassVar[list[RoundView]] = []

    def craft_round(self, view: RoundView) -> torch.Tensor:
        Probe.seen.append(view)
        return view.honest.mean(dim=0)


@pytest.fixture
def probe() -> Iterator[list[RoundView]]:
    Probe.seen = []
    register_attack("probe", Probe)
    try:
        yield Probe.seen
    finally:
        unregister_attack("probe")


TREE: dict[str, Any] = {
    **BASE,
    "rounds": 4,
    "selection": {"clients_per_round": 8, "over_selection": 1.0},
    "aggregation": {"name": "centered_clipping", "f": 2},
    "faults": {"enabled": False, "byzantine": {"clients": [2, 5], "attack": "probe"}},
}


def test_colluders_see_real_client_ids_and_the_servers_public_state(
    probe: list[RoundView],
) -> None:
    sim = Simulation(tiny_config(tree=TREE))
    history = sim.run().history
    assert [v.round_index for v in probe] == [0, 1, 2, 3]  # one crafted vector a round
    for view, record in zip(probe, history, strict=True):
        assert view.byzantine_clients == (2, 5) and view.f == 2
        assert view.selected == tuple(sorted(record["dispatched"]))
        assert set(view.honest_clients) == set(record["accepted"]) - {2, 5}
        assert view.aggregation.rule == "centered_clipping" and view.aggregation.f == 2
        assert view.model_version == record["model_version"] - 1  # every round commits
    assert probe[0].server_state == {}  # nothing carried into the first round
    for before, view in pairwise(probe):
        assert view.global_model is not None and before.global_model is not None
        step = view.global_model - before.global_model  # the aggregate the server applied
        torch.testing.assert_close(view.server_state[CENTRE], step)


def test_the_rule_in_the_view_is_the_servers_own(probe: list[RoundView]) -> None:
    Simulation(tiny_config(tree={**TREE, "rounds": 2})).run()
    view = probe[1]
    aggregate = view.aggregation.aggregate
    assert aggregate is not None
    stack = view.stack_with(view.honest.mean(dim=0))
    assert stack.shape[0] == 8
    assert torch.isfinite(aggregate(stack)).all()


def test_registration_is_checked_and_public() -> None:
    with pytest.raises(ConfigError, match="not a ModelAttack or ColludingAttack subclass"):
        register_attack("not_an_attack", int)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'sign_flip' is already registered"):
        register_attack("sign_flip", Probe)
    with pytest.raises(ConfigError, match="unknown attack 'never_registered'"):
        unregister_attack("never_registered")
    assert {"register_attack", "ColludingAttack", "ModelAttack", "RoundView"} <= set(
        phalanx.__all__
    )
    assert issubclass(ATTACKS["sign_flip"], ModelAttack)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_attack_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_custom_attack_example_runs_and_hurts_fedavg() -> None:
    example = load_example()
    try:
        assert "against_the_server" in ATTACKS
        clean, none_sent = example.run("fedavg", 0.0, rounds=4)
        attacked, sent = example.run("fedavg", 0.2, rounds=4)
    finally:
        unregister_attack("against_the_server")
    assert none_sent == 0 and sent == 2 * 4  # 2 of 10 clients, every round
    assert attacked < clean - 0.2
