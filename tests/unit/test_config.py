"""Configuration fails fast and names what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.config import RunConfig, apply_override, build_config, load_config
from phalanx.errors import ConfigError
from phalanx.scenarios import available, scenario_path


@pytest.mark.parametrize("name", ["seed", "digits"])
def test_shipped_scenarios_are_valid(name: str) -> None:
    config = load_config(scenario_path(name))
    assert config.name == name


def test_the_seed_scenario_is_the_seed_tutorials_workload() -> None:
    config = load_config(scenario_path("seed"))
    assert (config.workload.num_clients, config.selection.clients_per_round) == (20, 10)
    assert (config.rounds, config.quorum.min_updates) == (50, 5)
    assert (config.training.local_epochs, config.training.batch_size, config.training.lr) == (
        3, 32, 0.01,
    )  # fmt: skip
    assert [rule.rate for rule in config.faults.rules] == [0.2, 0.1]


def test_overrides_parse_toml_values() -> None:
    tree: dict[str, object] = {}
    apply_override(tree, "selection.clients_per_round=5")
    apply_override(tree, "faults.corruptions=['nan', 'noise']")
    apply_override(tree, "name=plain words")
    assert tree == {
        "selection": {"clients_per_round": 5},
        "faults": {"corruptions": ["nan", "noise"]},
        "name": "plain words",
    }
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        apply_override(tree, "no-equals-sign")


def test_errors_name_the_key_and_the_valid_choices() -> None:
    with pytest.raises(ConfigError, match=r"selection\.clients_per_rnd: Extra inputs"):
        build_config({}, ["selection.clients_per_rnd=3"])
    with pytest.raises(ConfigError, match="'seed', 'synthetic', 'digits'"):
        build_config({}, ["workload.name=mnist"])
    with pytest.raises(ConfigError, match=r"retry\.retry_on\.0"):
        build_config({}, ["retry.retry_on=['sometimes']"])
    with pytest.raises(ConfigError, match="no round could ever commit"):
        build_config({}, ["quorum.min_updates=11"])
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; valid: digits, robust, seed"):
        scenario_path("nope")
    assert available() == ["digits", "robust", "seed"]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_custom_workload_takes_the_clients_count() -> None:
    config = RunConfig().for_clients(12)
    assert config.workload.name == "custom" and config.workload.num_clients == 12
    with pytest.raises(ConfigError, match=r"clients_per_round \(10\) exceeds .*num_clients \(7\)"):
        RunConfig().for_clients(7)


def test_null_sets_an_optional_key_to_none() -> None:
    for word in ("null", "none", "None", "NULL"):
        config = load_config(scenario_path("digits"), [f"workload.dirichlet_alpha={word}"])
        assert config.workload.name == "digits" and config.workload.dirichlet_alpha is None
    tree: dict[str, object] = {}
    apply_override(tree, 'name="null"')  # quoted: the string
    assert tree == {"name": "null"}


def test_null_on_a_required_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"workload\.hidden: is not optional; it cannot be"):
        load_config(scenario_path("digits"), ["workload.hidden=null"])
    with pytest.raises(ConfigError, match=r"  rounds: is not optional"):
        build_config({}, ["rounds=none"])


def test_an_inline_table_replaces_the_whole_table() -> None:
    """The way to switch a rule whose parameters differ (README's example)."""
    robust = load_config(scenario_path("robust"))
    assert [step.name for step in robust.aggregation.pre] == ["persistent_flags", "winsorise"]
    config = load_config(scenario_path("robust"), ['aggregation={name="fedavg"}'])
    assert config.aggregation.name == "fedavg" and config.aggregation.params == {}
    assert config.aggregation.f == 0 and not config.aggregation.health_feedback
    assert config.aggregation.pre == ()


def test_overrides_leave_the_scenario_tree_untouched() -> None:
    tree = {"faults": {"byzantine": {"attack": "alie"}}}
    build_config(tree, ["faults.byzantine.attack=sign_flip"])
    assert tree == {"faults": {"byzantine": {"attack": "alie"}}}
