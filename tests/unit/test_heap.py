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
