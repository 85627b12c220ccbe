"""The public surface is explicit, sorted and complete (every name importable)."""

from __future__ import annotations

import phalanx


def test_all_is_sorted_and_importable() -> None:
    assert phalanx.__all__ == sorted(phalanx.__all__)
    for name in phalanx.__all__:
        assert getattr(phalanx, name) is not None


def test_every_public_binding_is_listed() -> None:
    for name in phalanx.__all__:
        getattr(phalanx, name)  # names load on first use; load them all
    public = {
        name
        for name, value in vars(phalanx).items()
        if not name.startswith("_") and not isinstance(value, type(phalanx))
    }
    assert public == set(phalanx.__all__)
