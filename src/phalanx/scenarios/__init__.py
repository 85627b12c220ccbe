"""Scenario files shipped with phalanx (TOML), found by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from phalanx.errors import ConfigError


def available() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__package__).iterdir()
        if p.name.endswith(".toml")
    )


def scenario_path(name: str) -> Path:
    """The path of a shipped scenario by name (``seed``, ``digits``)."""
    if name not in available():
        raise ConfigError(f"unknown scenario {name!r}; shipped: {', '.join(available())}")
    return Path(str(resources.files(__package__) / f"{name}.toml"))
