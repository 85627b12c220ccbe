"""One registry idiom for every thing chosen by name: register, look up, check parameters,
list names with a description each; user code adds its own entries."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from pydantic import Field

from phalanx.aggregation import RULES, STEPS
from phalanx.config import ByzantineConfig, Strict
from phalanx.core.named import Params, Registry, no_params
from phalanx.errors import ConfigError
from phalanx.faults.attacks import ModelAttack
from phalanx.faults.byzantine import ATTACKS, build_attack
from phalanx.scenarios import SCENARIOS, header
from phalanx.workloads import WORKLOADS


class Widths(Params):
    width: int = Field(1, ge=1)


def widgets() -> Registry[str, Params]:
    registry: Registry[str, Params] = Registry("widget", params_of=no_params)
    registry.register("plain", "P", description="takes nothing")
    registry.register("wide", "W", params=Widths, description="takes a width")
    return registry


def test_lookup_and_parameters_of_registered_names() -> None:
    registry = widgets()

    assert registry.lookup("wide") == "W"
    assert registry.parse("wide", {"width": 3}) == Widths(width=3)
    assert registry.parse("plain", {}) == Params()
    assert registry.names() == ["plain", "wide"]
    assert registry.descriptions() == {"plain": "takes nothing", "wide": "takes a width"}
    assert "wide" in registry and len(registry) == 2 and sorted(registry) == ["plain", "wide"]


def test_unknown_names_and_parameters_list_what_is_valid() -> None:
    registry = widgets()

    with pytest.raises(ConfigError, match=r"^unknown widget 'wid'; valid: plain, wide$"):
        registry.lookup("wid")
    with pytest.raises(ConfigError, match=r"unknown parameter 'w' for widget 'wide'; valid: width"):
        registry.parse("wide", {"w": 2})
    with pytest.raises(ConfigError, match=r"widget 'wide': width: .*greater than or equal to 1"):
        registry.parse("wide", {"width": 0})
    with pytest.raises(ConfigError, match=r"unknown parameter 'width' .* valid: \(none\)"):
        registry.parse("plain", {"width": 2})


def test_a_taken_name_needs_replace_and_names_are_config_words() -> None:
    registry = widgets()

    with pytest.raises(ConfigError, match="widget 'wide' is already registered"):
        registry.register("wide", "X")
    registry.register("wide", "X", replace=True)
    assert registry.lookup("wide") == "X"
    for bad in ("Wide", "two words", "", "9lives"):
        with pytest.raises(ConfigError, match="must be lower-case letters"):
            registry.register(bad, "Y")


def test_the_description_defaults_to_the_first_docstring_line() -> None:
    registry: Registry[type[Widths], Params] = Registry("widget", params_of=no_params)

    registry.register("widths", Widths)

    assert registry.descriptions() == {"widths": ""}  # Widths has no docstring of its own
    registry.register("doc", Strict, replace=True)
    assert registry.descriptions()["doc"].startswith("The one strict base model")


class Halve(ModelAttack):
    """Send half the genuine update."""

    name: ClassVar[str] = "halve"
    by: float = Field(2.0, gt=0)

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return genuine / self.by


def test_user_code_registers_an_attack_that_config_then_names() -> None:
    ATTACKS.register("halve", Halve)
    try:
        attack = build_attack(ByzantineConfig(attack="halve", params={"by": 4.0}))

        assert attack == Halve(by=4.0)
        assert torch.equal(attack.craft(torch.ones(2), torch.Generator()), torch.full((2,), 0.25))
        assert ATTACKS.descriptions()["halve"] == "Send half the genuine update."
        with pytest.raises(ConfigError, match="unknown parameter 'bx' for attack 'halve'"):
            build_attack(ByzantineConfig(attack="halve", params={"bx": 4.0}))
    finally:
        ATTACKS._entries.pop("halve")


def test_every_registry_describes_every_entry_in_one_line() -> None:
    for registry in (RULES, STEPS, ATTACKS, WORKLOADS, SCENARIOS):
        descriptions = registry.descriptions()
        assert list(descriptions) == registry.names() and registry.names()
        assert all(text and "\n" not in text for text in descriptions.values()), registry.kind


def test_a_scenario_is_described_by_the_opening_sentence_of_its_header() -> None:
    text = "# Byzantine robustness on digits: 20 clients,\n# all asked. More.\nname = 'x'\n"

    assert header(text) == "Byzantine robustness on digits"
    assert header("# One line, no stop\n# continued\nseed = 1\n") == "One line, no stop continued"
    assert (
        SCENARIOS.descriptions()["seed"] == "The seed tutorial's scenario, phalanx's first baseline"
    )
