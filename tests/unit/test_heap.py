"""The engine moves the heap it set up out of the garbage collector's way, once."""

from __future__ import annotations

import gc

import pytest

from phalanx.engine import heap


def test_settling_freezes_the_heap_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_settled", False)
    kept = [object() for _ in range(3)]  # something alive now
    assert heap.settle_long_lived()
    assert gc.get_freeze_count() >= len(kept)
    assert not heap.settle_long_lived()  # once: later engines in the process do nothing


def test_a_disabled_collector_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_settled", False)
    monkeypatch.setattr(gc, "isenabled", lambda: False)
    assert not heap.settle_long_lived()
    assert not heap._settled  # a later call, with the collector on, still settles


@pytest.fixture
def thresholds(monkeypatch: pytest.MonkeyPatch) -> object:
    """The process's collector thresholds, restored after the test."""
    saved = gc.get_threshold()
    monkeypatch.setattr(heap, "_applied", None)
    gc.set_threshold(700, saved[1], saved[2])
    yield saved
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_the_young_threshold_follows_the_round_and_never_drops_below_the_processs() -> None:
    middle, old = gc.get_threshold()[1:]
    assert heap.fit_to_round(13_000) == 13_000 * heap.YOUNG_PER_TASK
    assert gc.get_threshold() == (13_000 * heap.YOUNG_PER_TASK, middle, old)
    assert heap.fit_to_round(1_300) == 1_300 * heap.YOUNG_PER_TASK  # a smaller round: lower
    assert heap.fit_to_round(10) == 700  # never below what the process had
    assert gc.get_threshold() == (700, middle, old)


@pytest.mark.usefixtures("thresholds")
def test_automatic_collection_switched_off_stays_off() -> None:
    gc.set_threshold(0)
    assert heap.fit_to_round(13_000) == 0 and gc.get_threshold()[0] == 0


@pytest.mark.usefixtures("thresholds")
def test_a_threshold_the_process_sets_later_becomes_the_floor() -> None:
    assert heap.fit_to_round(1_300) == 13_000
    gc.set_threshold(50_000)  # the operator's own choice, after the engine's
    assert heap.fit_to_round(1_300) == 50_000 and gc.get_threshold()[0] == 50_000
    assert heap.fit_to_round(13_000) == 130_000
    assert heap.fit_to_round(1_300) == 50_000  # back to the process's floor, not 700
