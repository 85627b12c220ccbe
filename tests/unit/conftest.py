"""Fixtures the unit tests share. A module that needs another ``served`` (other handlers, TLS)
defines its own, which pytest prefers to this one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.fake_coordinator import FakeCoordinator, Served


@pytest.fixture
def served() -> Iterator[Served]:
    """A scripted coordinator served with the real servicer on a loopback port."""
    with Served(FakeCoordinator()) as server:
        yield server
