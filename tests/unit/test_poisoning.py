"""Data poisoning: label flips, the pixel trigger, which examples change, and the backdoor's
success rate measured on a model whose answer we can work out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from phalanx.core.tensors import Manifest, flatten
from phalanx.errors import ConfigError
from phalanx.evaluation import backdoor_evaluator, combine_evaluators
from phalanx.faults.poisoning import (
    Backdoor,
    LabelFlip,
    flip_labels,
    infer_data_shape,
    poison_clients,
    poisoned_count,
    stamp_trigger,
)
from phalanx.workloads.base import ClientData

CORNER = [10, 11, 14, 15]  # bottom-right 2x2 of a 4x4 image, flattened row-major


def clients(count: int = 3, n: int = 6) -> list[ClientData]:
    """Client c has n 4x4 images of value c / 10 and labels 0, 1, 2, ..."""
    return [ClientData(torch.full((n, 16), c / 10), torch.arange(n) % 3) for c in range(count)]


def test_label_flip_mirrors_each_class() -> None:
    assert torch.equal(flip_labels(torch.tensor([0, 3, 9]), 10), torch.tensor([9, 6, 0]))
    flipped = LabelFlip().poison(
        clients()[1], np.random.default_rng(0), num_classes=3, image_shape=None
    )
    assert torch.equal(flipped.y, torch.tensor([2, 1, 0, 2, 1, 0]))


def test_stamp_trigger_sets_the_bottom_right_square_of_a_copy() -> None:
    x = torch.zeros(2, 16)
    stamped = stamp_trigger(x, (4, 4), 2, 9.0)
    assert torch.equal(x, torch.zeros(2, 16))  # untouched
    expected = torch.zeros(2, 16)
    expected[:, CORNER] = 9.0
    assert torch.equal(stamped, expected)


def test_stamp_trigger_handles_unflattened_and_multichannel_images() -> None:
    stamped = stamp_trigger(torch.zeros(1, 2, 4, 4), (4, 4), 1, 1.0)
    assert stamped.shape == (1, 2, 4, 4)
    assert stamped.sum() == 2 and stamped[0, 0, 3, 3] == 1 and stamped[0, 1, 3, 3] == 1


def test_stamp_trigger_refuses_what_is_not_an_image() -> None:
    with pytest.raises(ConfigError, match="are not 4x4 images"):
        stamp_trigger(torch.zeros(1, 10), (4, 4), 2, 1.0)
    with pytest.raises(ConfigError, match=r"trigger_size must be in 1..4; got 5"):
        stamp_trigger(torch.zeros(1, 16), (4, 4), 5, 1.0)


def test_poisoned_count_rounds_half_up() -> None:
    assert [poisoned_count(n, 0.5) for n in (0, 1, 3, 6)] == [0, 1, 2, 3]
    assert poisoned_count(5, 1.0) == 5


def test_backdoor_stamps_and_relabels_a_seeded_share_of_examples() -> None:
    data = clients(n=8)[2]
    attack = Backdoor(target=1, poison_fraction=0.5, value=1.0)
    poisoned = attack.poison(data, np.random.default_rng(4), num_classes=3, image_shape=(4, 4))
    changed = (poisoned.x != data.x).any(dim=1)
    assert int(changed.sum()) == 4
    assert torch.equal(poisoned.y[changed], torch.ones(4, dtype=torch.long))
    assert torch.equal(poisoned.y[~changed], data.y[~changed])
    assert torch.equal(poisoned.x[changed][:, CORNER], torch.ones(4, 4))
    again = attack.poison(data, np.random.default_rng(4), num_classes=3, image_shape=(4, 4))
    assert torch.equal(again.x, poisoned.x) and torch.equal(again.y, poisoned.y)


def test_only_byzantine_clients_are_poisoned() -> None:
    honest = clients()
    poisoned = poison_clients(
        honest, frozenset({1}), LabelFlip(), num_classes=3, image_shape=None, seed=0
    )
    assert poisoned[0] is honest[0] and poisoned[2] is honest[2]
    assert torch.equal(poisoned[1].y, flip_labels(honest[1].y, 3))
    assert torch.equal(poisoned[1].x, honest[1].x)


def test_backdoor_trigger_value_defaults_to_the_brightest_byzantine_pixel() -> None:
    resolved = Backdoor().resolve(clients(), frozenset({0, 1}))
    assert resolved.value == pytest.approx(0.1)
    assert Backdoor(value=3.0).resolve(clients(), frozenset({0})).value == 3.0
    poisoned = poison_clients(
        clients(), frozenset({1}), Backdoor(), num_classes=3, image_shape=(4, 4), seed=0
    )
    assert poisoned[1].x.max() == pytest.approx(0.1)  # the trigger does not stand out


def test_backdoor_needs_an_image_shape_and_a_valid_target() -> None:
    with pytest.raises(ConfigError, match="needs image data"):
        poison_clients(
            clients(), frozenset({1}), Backdoor(), num_classes=3, image_shape=None, seed=0
        )
    with pytest.raises(ConfigError, match=r"target 3 is not a class \(0..2\)"):
        Backdoor(target=3).check_data(num_classes=3, image_shape=(4, 4))
    with pytest.raises(ConfigError, match="trigger_size 5 does not fit"):
        Backdoor(trigger_size=5).check_data(num_classes=3, image_shape=(4, 4))


def test_backdoor_boost_scales_the_sent_delta() -> None:
    generator = torch.Generator()
    assert Backdoor().craft(torch.ones(2), generator) is None
    assert torch.equal(Backdoor(boost=3.0).craft(torch.ones(2), generator), torch.full((2,), 3.0))


def test_infer_data_shape_of_users_own_data() -> None:
    images = [ClientData(torch.zeros(2, 1, 5, 6), torch.tensor([0, 4]))]
    test = ClientData(torch.zeros(1, 1, 5, 6), torch.tensor([6]))
    assert infer_data_shape(images, test) == (7, (5, 6))
    assert infer_data_shape(clients(), None) == (3, None)


def backdoored_model(weight_on_x0: float) -> tuple[nn.Module, Manifest, torch.Tensor]:
    """Logit 1 = 10 * pixel 15 + weight_on_x0 * pixel 0 - 5; logit 0 = 0."""
    model = nn.Linear(16, 2)
    tensors = {"weight": torch.zeros(2, 16), "bias": torch.tensor([0.0, -5.0])}
    tensors["weight"][1, 15] = 10.0
    tensors["weight"][1, 0] = weight_on_x0
    manifest = Manifest.of(tensors)
    return model, manifest, flatten(tensors, manifest)


def test_backdoor_asr_counts_triggered_non_target_examples_sent_to_target() -> None:
    x = torch.zeros(4, 16)
    x[2, 0] = 1.0  # with weight -20 on pixel 0, this example resists the trigger
    test = ClientData(x, torch.tensor([1, 0, 0, 2]))  # the first is the target: left out
    for weight, asr in [(0.0, 1.0), (-20.0, 2 / 3)]:
        model, manifest, params = backdoored_model(weight)
        evaluate = backdoor_evaluator(
            model, manifest, test, image_shape=(4, 4), trigger_size=2, value=1.0, target=1
        )
        assert evaluate(params) == {"backdoor_asr": pytest.approx(asr)}


def test_backdoor_asr_needs_a_non_target_test_example() -> None:
    model, manifest, _ = backdoored_model(0.0)
    test = ClientData(torch.zeros(2, 16), torch.tensor([1, 1]))
    with pytest.raises(ConfigError, match="other than 1"):
        backdoor_evaluator(
            model, manifest, test, image_shape=(4, 4), trigger_size=2, value=1.0, target=1
        )


def test_combined_evaluators_merge_their_metrics() -> None:
    combined = combine_evaluators(lambda p: {"a": 1.0}, lambda p: {"b": float(p.sum())})
    assert combined(torch.ones(3)) == {"a": 1.0, "b": 3.0}
