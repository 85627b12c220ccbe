"""The relative norm bound: the lower median of a reference that changes as norms come and go."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.config import ValidationConfig
from phalanx.engine.norms import NormReference
from phalanx.types import RejectReason


def flagged(config: ValidationConfig, reference: list[float], norms: list[float]) -> list[float]:
    bound = NormReference(config, reference)
    verdicts = [(n, bound.violation(n)) for n in norms]
    assert all(v.reason is RejectReason.NORM_RELATIVE for _, v in verdicts if v)
    return [n for n, v in verdicts if v]


def test_relative_norm_flags_only_outliers_of_the_median() -> None:
    norms = [1.0, 1.2, 0.9, 4.0, 50.0]  # lower median 1.2: the bar is 3.6
    assert flagged(ValidationConfig(max_relative_norm=3.0), norms, norms) == [4.0, 50.0]
    assert flagged(ValidationConfig(relative_min_updates=3), norms[:2], norms) == []
    assert flagged(ValidationConfig(max_relative_norm=None), norms, norms) == []


def test_the_message_quotes_the_norm_the_factor_and_the_median() -> None:
    verdict = NormReference(ValidationConfig(), [1.0, 2.0, 3.0, 4.0]).violation(7.0)
    assert verdict is not None and verdict.detail == "norm 7 > 3.0 x median 2"


@given(
    st.lists(st.floats(0.0, 1e6), min_size=1, max_size=40),
    st.lists(st.integers(0, 39), max_size=20),
)
def test_the_running_median_is_the_lower_median_after_any_adds_and_removes(
    norms: list[float], drops: list[int]
) -> None:
    reference = NormReference(ValidationConfig(), norms[:1])
    kept = norms[:1]
    for norm in norms[1:]:
        reference.add(norm)
        kept.append(norm)
    for drop in drops:
        if len(kept) > 1:
            reference.remove(kept.pop(drop % len(kept)))
    assert reference.median() == statistics.median_low(kept) and len(reference) == len(kept)


@given(
    st.lists(st.sampled_from([0.0, 1.0, 2.0, 2.0, 3.0]), min_size=1, max_size=30),
    st.lists(st.tuples(st.booleans(), st.integers(0, 29)), max_size=40),
)
def test_ties_and_interleaved_adds_and_removes_keep_the_lower_median(
    prior: list[float], steps: list[tuple[bool, int]]
) -> None:
    """Equal norms on both halves and removals mixed with arrivals: the lazily removed
    entries never surface as the median."""
    reference = NormReference(ValidationConfig(), prior)
    kept = list(prior)
    for add, pick in steps:
        if add:
            norm = float(pick % 4)
            reference.add(norm)
            kept.append(norm)
        elif len(kept) > 1:
            reference.remove(kept.pop(pick % len(kept)))
        assert reference.median() == statistics.median_low(kept) and len(reference) == len(kept)


def test_removing_a_norm_never_added_is_refused() -> None:
    reference = NormReference(ValidationConfig(), [1.0, 2.0])
    reference.remove(2.0)
    with pytest.raises(ValueError, match="not in the reference"):
        reference.remove(2.0)
    assert reference.median() == 1.0 and len(reference) == 1
