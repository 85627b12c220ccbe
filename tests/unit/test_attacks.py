"""Model-poisoning attacks: exact vectors on tiny literal deltas, the registry's errors, and
the runtime applying them at the message boundary (colluders send one crafted vector)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from statistics import NormalDist

import pytest
import torch

from phalanx.config import ByzantineConfig, build_config
from phalanx.core.messages import ClientUpdate, Envelope, TaskConfig, TaskKey, TrainTask
from phalanx.core.models import ModelBook
from phalanx.core.tensors import Manifest, payload_digest
from phalanx.errors import ConfigError
from phalanx.faults.attacks import (
    Alie,
    Gaussian,
    Ipm,
    Scaling,
    SignFlip,
    alie,
    alie_z,
    gaussian_noise,
    ipm,
    scale_update,
    sign_flip,
)
from phalanx.faults.byzantine import ATTACKS, build_attack
from phalanx.faults.poisoning import Backdoor, LabelFlip
from phalanx.runtime.inprocess.runtime import SimulationRuntime
from phalanx.runtime.inprocess.trainers import TrainJob, TrainOutcome

# Three honest deltas of dimension 3: mean (3, 3, -1), sample std (2, 3, 0).
HONEST = torch.tensor([[1.0, 0.0, -1.0], [3.0, 3.0, -1.0], [5.0, 6.0, -1.0]])


def test_sign_flip_and_scaling_transform_the_genuine_delta() -> None:
    delta = torch.tensor([1.0, -2.0, 0.5])
    assert torch.equal(sign_flip(delta), torch.tensor([-1.0, 2.0, -0.5]))
    assert torch.equal(sign_flip(delta, 2.0), torch.tensor([-2.0, 4.0, -1.0]))
    assert torch.equal(scale_update(delta, 20.0), torch.tensor([20.0, -40.0, 10.0]))


def test_alie_is_mean_minus_z_sample_std_coordinate_wise() -> None:
    assert torch.equal(alie(HONEST, 1.0), torch.tensor([1.0, 0.0, -1.0]))
    assert torch.equal(alie(HONEST, 0.5), torch.tensor([2.0, 1.5, -1.0]))


def test_alie_with_one_honest_delta_sends_that_delta() -> None:
    assert torch.equal(alie(HONEST[:1], 1.5), HONEST[0])


def test_ipm_is_minus_epsilon_times_the_honest_mean() -> None:
    assert torch.allclose(ipm(HONEST, 0.1), torch.tensor([-0.3, -0.3, 0.1]))
    assert torch.equal(ipm(HONEST, 1.0), torch.tensor([-3.0, -3.0, 1.0]))


def test_alie_z_matches_baruch_for_twenty_clients_four_byzantine() -> None:
    # s = floor(20/2 + 1) - 4 = 7; z = Phi^-1((20 - 7) / 20) = Phi^-1(0.65)
    assert alie_z(20, 4) == pytest.approx(0.3853, abs=1e-4)
    assert alie_z(20, 4) == NormalDist().inv_cdf(0.65)


def test_alie_z_refuses_f_where_the_formula_is_undefined() -> None:
    with pytest.raises(ValueError, match=r"n=20, f=11, s=0"):
        alie_z(20, 11)


def test_alie_without_z_uses_baruchs_z_with_f_clamped_to_half() -> None:
    assert torch.equal(Alie().collude(HONEST, n=20, f=4), alie(HONEST, alie_z(20, 4)))
    assert torch.equal(Alie().collude(HONEST, n=20, f=15), alie(HONEST, alie_z(20, 10)))
    assert torch.equal(Alie().collude(HONEST, n=20, f=0), alie(HONEST, alie_z(20, 1)))
    assert torch.equal(Alie(z=1.0).collude(HONEST, n=20, f=4), torch.tensor([1.0, 0.0, -1.0]))


def test_gaussian_noise_is_deterministic_in_its_generator() -> None:
    def draw(std: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(7)
        return Gaussian(std=std).craft(torch.zeros(5), generator)

    assert torch.equal(draw(1.0), draw(1.0))
    assert torch.allclose(draw(2.0), 2 * draw(1.0))
    assert torch.equal(draw(1.0), gaussian_noise(5, 1.0, torch.Generator().manual_seed(7)))


def test_defaults_of_every_attack() -> None:
    assert build_attack(ByzantineConfig()) == SignFlip(scale=1.0)
    assert build_attack(ByzantineConfig(attack="scaling")) == Scaling(factor=20.0)
    assert build_attack(ByzantineConfig(attack="gaussian")) == Gaussian(std=1.0)
    assert build_attack(ByzantineConfig(attack="alie")) == Alie(z=None)
    assert build_attack(ByzantineConfig(attack="ipm")) == Ipm(epsilon=0.1)
    assert build_attack(ByzantineConfig(attack="label_flip")) == LabelFlip()
    backdoor = build_attack(ByzantineConfig(attack="backdoor"))
    assert backdoor == Backdoor(target=0, poison_fraction=0.5, trigger_size=2, boost=1.0)


def test_one_registry_names_model_and_data_attacks() -> None:
    names = "alie, backdoor, gaussian, ipm, label_flip, scaling, sign_flip"
    assert ", ".join(sorted(ATTACKS)) == names
    with pytest.raises(ConfigError, match=f"unknown attack 'alei'; valid: {names}$"):
        build_attack(ByzantineConfig(attack="alei"))


def test_unknown_or_bad_attack_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown parameter 'sigma' .* 'gaussian'; valid: std"):
        build_attack(ByzantineConfig(attack="gaussian", params={"sigma": 1.0}))
    with pytest.raises(ConfigError, match=r"attack 'ipm': epsilon: .*greater than 0"):
        build_attack(ByzantineConfig(attack="ipm", params={"epsilon": -1.0}))
    assert build_attack(ByzantineConfig(attack="alie", params={"z": 1.5})) == Alie(z=1.5)


def test_alie_without_z_needs_two_clients_per_round() -> None:
    with pytest.raises(ConfigError, match="needs n >= 2"):
        Alie().check_round(1)


# --- at the message boundary of the simulation runtime ----------------------------------

MANIFEST = Manifest.of({"w": torch.zeros(3)})
GLOBAL = torch.tensor([10.0, 10.0, 10.0])
DELTAS = {0: HONEST[0], 1: HONEST[1], 2: HONEST[2], 3: torch.ones(3), 4: 2 * torch.ones(3)}


class DeltaTrainer:
    """Client c's genuine update is GLOBAL + DELTAS[c]; records the batches it trains."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def total_steps(self, client: int) -> int:
        return 10

    def num_examples(self, client: int) -> int:
        return 5

    def train(self, params: torch.Tensor, jobs: Sequence[TrainJob]) -> list[TrainOutcome]:
        self.batches.append([job.key.client for job in jobs])
        return [TrainOutcome({"w": params + DELTAS[j.key.client]}, 5, {}) for j in jobs]


def deliver(
    attack: str, byzantine: str, *extra: str
) -> tuple[dict[int, ClientUpdate], SimulationRuntime]:
    """Dispatch clients 0-4 of round 0 and collect every update, by client."""
    config = build_config(
        {"workload": {"num_clients": 5}, "selection": {"clients_per_round": 5},
         "quorum": {"min_updates": 1}},
        [f"faults.byzantine.attack={attack}", f"faults.byzantine.clients={byzantine}", *extra],
    )  # fmt: skip
    models = ModelBook(MANIFEST)
    runtime = SimulationRuntime(config, DeltaTrainer(), MANIFEST, num_clients=5, models=models)
    ref = models.publish(0, GLOBAL)
    for client in range(5):
        key, settings = TaskKey(0, client, 0), TaskConfig(3, 32, 0.01, ttl_s=100.0)
        runtime.submit(TrainTask(Envelope(), key, ref, settings))

    async def drain() -> dict[int, ClientUpdate]:
        out: dict[int, ClientUpdate] = {}
        while (event := await runtime.next_event(100.0)) is not None:
            if isinstance(event, ClientUpdate):
                out[event.key.client] = event
        return out

    return asyncio.run(drain()), runtime


def sent_delta(update: ClientUpdate) -> torch.Tensor:
    return update.tensors["w"] - GLOBAL


@pytest.mark.parametrize(
    ("attack", "params", "expected"),
    [
        ("ipm", "{}", [-0.3, -0.3, 0.1]),
        ("ipm", "{epsilon=1.0}", [-3.0, -3.0, 1.0]),
        ("alie", "{z=1.0}", [1.0, 0.0, -1.0]),
    ],
)
def test_colluders_send_one_vector_crafted_from_every_honest_delta(
    attack: str, params: str, expected: list[float]
) -> None:
    updates, runtime = deliver(attack, "[3, 4]", f"faults.byzantine.params={params}")
    assert torch.allclose(sent_delta(updates[3]), torch.tensor(expected))
    assert torch.equal(updates[3].tensors["w"], updates[4].tensors["w"])
    for client in (0, 1, 2):  # honest updates go as trained
        assert torch.equal(sent_delta(updates[client]), DELTAS[client])
    for update in updates.values():  # the sender checksums what it sends
        assert update.digest == payload_digest(update.tensors)
    attacks = [item for item in runtime.plan.fired(0) if item["kind"] == "byzantine"]
    assert sorted(item["client"] for item in attacks) == [3, 4]
    assert {item["detail"] for item in attacks} == {attack}


def test_colluders_without_honest_updates_fall_back_to_their_own() -> None:
    updates, _ = deliver("ipm", "[0, 1, 2, 3, 4]", "faults.byzantine.params={epsilon=1.0}")
    own_mean = torch.stack(list(DELTAS.values())).mean(dim=0)
    for update in updates.values():
        assert torch.allclose(sent_delta(update), -own_mean)


def test_per_client_attacks_transform_each_clients_own_delta() -> None:
    updates, _ = deliver("sign_flip", "[3, 4]")
    assert torch.equal(sent_delta(updates[3]), -DELTAS[3])
    assert torch.equal(sent_delta(updates[4]), -DELTAS[4])
    updates, _ = deliver("scaling", "[4]", "faults.byzantine.params={factor=3.0}")
    assert torch.equal(sent_delta(updates[4]), 3 * DELTAS[4])
    assert torch.equal(sent_delta(updates[3]), DELTAS[3])


def test_gaussian_updates_are_deterministic_and_differ_per_client() -> None:
    first, _ = deliver("gaussian", "[3, 4]")
    again, _ = deliver("gaussian", "[3, 4]")
    assert torch.equal(first[3].tensors["w"], again[3].tensors["w"])
    assert not torch.equal(first[3].tensors["w"], first[4].tensors["w"])


def test_colluders_see_honest_replies_not_yet_due_by_training_them_early() -> None:
    # Batches of one: lazy training alone would not have trained the later honest clients.
    updates, runtime = deliver(
        "ipm", "[3, 4]", "faults.byzantine.params={epsilon=1.0}", "selection.clients_per_round=1"
    )
    assert torch.equal(sent_delta(updates[3]), torch.tensor([-3.0, -3.0, 1.0]))
    assert torch.equal(updates[3].tensors["w"], updates[4].tensors["w"])
    order = list(updates)  # delivery order
    first = min(order.index(3), order.index(4))
    assert set(order[:first]) & {0, 1, 2} and set(order[first:]) & {0, 1, 2}  # both paths
    trainer = runtime._trainer
    assert isinstance(trainer, DeltaTrainer)
    assert sorted(c for batch in trainer.batches for c in batch) == [0, 1, 2, 3, 4]


def test_a_byzantine_client_that_crashes_sends_nothing_and_logs_no_attack() -> None:
    updates, runtime = deliver(
        "sign_flip", "[3, 4]", "faults.schedule=[{round=0, client=3, kind='crash'}]"
    )
    assert 3 not in updates and torch.equal(sent_delta(updates[4]), -DELTAS[4])
    log = {(item["client"], item["kind"]) for item in runtime.plan.fired(0)}
    assert log == {(3, "crash"), (4, "byzantine")}
