"""Tolerance preconditions that fail with the numbers, and registry errors that list what is
valid."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from phalanx.aggregation import RULES, STEPS, build_aggregator
from phalanx.aggregation.registry import max_f
from phalanx.config import AggregationConfig, StepConfig
from phalanx.errors import AggregationError, ConfigError


def aggregate(
    name: str, n: int, f: int, pre: tuple[StepConfig, ...] = (), **params: Any
) -> torch.Tensor:
    config = AggregationConfig(name=name, f=f, params=params, pre=pre)
    updates = torch.arange(n * 3, dtype=torch.float32).view(n, 3).square()
    return build_aggregator(config).aggregate(updates, torch.ones(n)).vector


# (rule, params, smallest n that works for f = 2, the inequality it quotes)
TOLERANCES = [
    ("median", {}, 5, "n >= 2f + 1"),
    ("trimmed_mean", {}, 5, "n >= 2f + 1"),
    ("geometric_median", {}, 5, "n >= 2f + 1"),
    ("centered_clipping", {}, 5, "n >= 2f + 1"),
    ("krum", {}, 7, "n >= 2f + 3"),
    ("multi_krum", {"m": 2}, 7, "n >= 2f + 3"),
    ("bulyan", {}, 11, "n >= 4f + 3"),
]


@pytest.mark.parametrize(("rule", "params", "smallest", "inequality"), TOLERANCES)
def test_each_rule_states_its_tolerance_with_the_numbers(
    rule: str, params: dict[str, Any], smallest: int, inequality: str
) -> None:
    assert aggregate(rule, smallest, 2, **params).shape == (3,)  # at the bound: fine

    with pytest.raises(AggregationError) as error:
        aggregate(rule, smallest - 1, 2, **params)

    assert str(error.value) == f"{rule} needs {inequality}; got n={smallest - 1}, f=2"


@pytest.mark.parametrize(("rule", "params", "smallest", "inequality"), TOLERANCES)
def test_max_f_is_the_largest_f_the_rule_accepts(
    rule: str, params: dict[str, Any], smallest: int, inequality: str
) -> None:
    tolerated = max_f(rule, smallest)
    assert tolerated == 2
    aggregate(rule, smallest, tolerated, **params)
    with pytest.raises(AggregationError):
        aggregate(rule, smallest, tolerated + 1, **params)


def test_fedavg_takes_no_f() -> None:
    assert max_f("fedavg", 20) is None


def test_the_issue_example_for_bulyan() -> None:
    with pytest.raises(AggregationError) as error:
        aggregate("bulyan", 9, 2)

    assert str(error.value) == "bulyan needs n >= 4f + 3; got n=9, f=2"


@pytest.mark.parametrize(
    ("n", "f", "trim"),
    [(5, 2, 1), (5, 1, 3)],  # trim below f; trim leaving nothing
)
def test_trimmed_mean_states_its_trim_condition(n: int, f: int, trim: int) -> None:
    with pytest.raises(AggregationError) as error:
        aggregate("trimmed_mean", n, f, trim=trim)

    assert str(error.value) == (
        f"trimmed_mean needs f <= trim and n >= 2 trim + 1 (trim={trim}); got n={n}, f={f}"
    )


def test_multi_krum_refuses_to_average_more_rows_than_it_has() -> None:
    with pytest.raises(AggregationError) as error:
        aggregate("multi_krum", 5, 1, m=6)

    assert str(error.value) == "multi_krum needs m <= n (m=6); got n=5, f=1"


@pytest.mark.parametrize(
    ("pre", "message"),
    [
        (StepConfig(name="nnm"), "nnm needs n >= 2f + 1; got n=4, f=2"),
        (StepConfig(name="clipping"), "adaptive clipping needs n >= 2f + 1; got n=4, f=2"),
    ],
)
def test_each_step_states_its_tolerance_before_the_rule_runs(pre: StepConfig, message: str) -> None:
    with pytest.raises(AggregationError) as error:
        aggregate("fedavg", 4, 2, pre=(pre,))

    assert str(error.value) == message


def test_static_clipping_and_the_mean_need_nothing() -> None:
    static = StepConfig(name="clipping", params={"mode": "static", "threshold": 1.0})

    assert aggregate("fedavg", 2, 3, pre=(static,)).shape == (3,)


def test_after_bucketing_the_rule_checks_the_rows_it_gets() -> None:
    # 6 rows in buckets of 2 would be 3 for the median, which needs 5 at f = 2: bucketing
    # shrinks its buckets to one row, and the median gets all 6. 4 rows are too few anyway.
    bucketing = StepConfig(name="bucketing", params={"size": 2})
    aggregate("median", 6, 2, pre=(bucketing,))

    with pytest.raises(AggregationError) as error:
        aggregate("median", 4, 2, pre=(bucketing,))

    assert str(error.value) == "median needs n >= 2f + 1; got n=4, f=2"


# --- registry -------------------------------------------------------------------------------

RULE_NAMES = "bulyan, centered_clipping, fedavg, geometric_median, krum, median, multi_krum, "
RULE_NAMES += "trimmed_mean"


def build(name: str, pre: tuple[StepConfig, ...] = (), **params: Any) -> None:
    build_aggregator(AggregationConfig(name=name, params=params, pre=pre))


def test_the_registries_hold_every_rule_and_step() -> None:
    assert ", ".join(sorted(RULES)) == RULE_NAMES
    assert sorted(STEPS) == [
        "bucketing",
        "clipping",
        "dnc",
        "flame",
        "foolsgold",
        "nnm",
        "persistent_flags",
        "winsorise",
    ]


def test_an_unknown_rule_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build("krm")

    assert str(error.value) == f"unknown aggregator 'krm'; valid: {RULE_NAMES}"


def test_an_unknown_step_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build("krum", pre=(StepConfig(name="nmm"),))

    assert str(error.value) == (
        "unknown pre-aggregation step 'nmm'; "
        "valid: bucketing, clipping, dnc, flame, foolsgold, nnm, persistent_flags, winsorise"
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("multi_krum", {"mm": 2}, "unknown parameter 'mm' for aggregator 'multi_krum'; valid: m"),
        ("krum", {"m": 2}, "unknown parameter 'm' for aggregator 'krum'; valid: (none)"),
        (
            "centered_clipping",
            {"tau": 1.0, "momentun": True},
            "unknown parameter 'momentun' for aggregator 'centered_clipping'; "
            "valid: flag_alignment, iterations, momentum, tau, tau_scale",
        ),
    ],
)
def test_an_unknown_parameter_lists_the_valid_ones(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        build(name, **params)

    assert str(error.value) == message


def test_an_unknown_step_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build("krum", pre=(StepConfig(name="bucketing", params={"s": 2}),))

    assert str(error.value) == (
        "unknown parameter 's' for pre-aggregation step 'bucketing'; valid: size"
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        (
            "multi_krum",
            {"m": 0},
            "aggregator 'multi_krum': m: Input should be greater than or equal to 1 "
            "(parameters: m)",
        ),
        (
            "geometric_median",
            {"nu": -1.0},
            "aggregator 'geometric_median': nu: Input should be greater than 0 "
            "(parameters: max_iter, nu, tol)",
        ),
        (
            "centered_clipping",
            {"tau": "big"},
            "aggregator 'centered_clipping': tau: Input should be a valid number, unable to "
            "parse string as a number (parameters: flag_alignment, iterations, momentum, tau, "
            "tau_scale)",
        ),
    ],
)
def test_a_bad_value_names_the_parameter_and_the_valid_ones(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        build(name, **params)

    assert str(error.value) == message


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"mode": "static"}, "static clipping needs a threshold"),
        ({"threshold": 1.0}, "adaptive clipping sets its own threshold; remove threshold"),
        ({"mode": "fixed"}, "mode: Input should be 'static' or 'adaptive'"),
    ],
)
def test_clipping_parameters_are_checked_together(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        build("krum", pre=(StepConfig(name="clipping", params=params),))

    assert problem in str(error.value)
    assert str(error.value).startswith("pre-aggregation step 'clipping': ")
    assert str(error.value).endswith("(parameters: mode, threshold)")


def test_a_bare_name_builds_the_rule_with_default_parameters() -> None:
    aggregator = build_aggregator("trimmed_mean")

    assert aggregator.name == "trimmed_mean"
