"""Scenario files shipped with phalanx (TOML), found by name through one ``Registry``.

Each shipped file is registered under its stem; its description is the opening sentence of
the comment block at its top. ``SCENARIOS.register(name, path)`` adds a file of one's own.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from phalanx.core.named import Params, Registry, no_params

SCENARIOS: Registry[Path, Params] = Registry("scenario", params_of=no_params)


def leading_comment(text: str) -> str:
    """A TOML file's leading comment block, as one paragraph."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def header(text: str) -> str:
    """The opening sentence of a TOML file's leading comment block, on one line."""
    return re.split(r"(?<=[.:])\s", leading_comment(text), maxsplit=1)[0].rstrip(".:")


def _register_shipped() -> None:
    for item in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name):
        if item.name.endswith(".toml"):
            path = Path(str(item))
            text = path.read_text(encoding="utf-8")
            SCENARIOS.register(item.name.removesuffix(".toml"), path, description=header(text))


_register_shipped()


def available() -> list[str]:
    """Every scenario name, sorted."""
    return SCENARIOS.names()


def scenario_path(name: str) -> Path:
    """The path of a scenario by name (``seed``, ``digits``); an unknown name lists the
    valid ones."""
    return SCENARIOS.lookup(name)
