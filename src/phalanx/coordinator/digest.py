"""The trajectory digest: which checkpoints belong to which configuration."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from phalanx.config import RunConfig

# Keys that do not change the model a round produces: a run can be extended (``rounds``)
# and its checkpoint policy changed on resume without leaving its trajectory.
OFF_TRAJECTORY = frozenset({"rounds", "checkpoint"})


def trajectory(config: RunConfig) -> dict[str, Any]:
    """The configuration as JSON, less the keys that do not change the trajectory."""
    return config.model_dump(mode="json", exclude=set(OFF_TRAJECTORY))


def config_digest(config: RunConfig) -> str:
    """Identifies the training trajectory: everything but the run's length and the
    checkpoint policy, so a finished run can be resumed to continue for more rounds."""
    relevant = trajectory(config)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def trajectory_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """Each trajectory key whose value differs, as "key: old -> new", dotted and sorted."""
    before, after = _flat(trajectory(old)), _flat(trajectory(new))
    unset = object()
    return [
        f"{key}: {_show(before.get(key, unset))} -> {_show(after.get(key, unset))}"
        for key in sorted(set(before) | set(after))
        if before.get(key, unset) != after.get(key, unset)
    ]


def _show(value: object) -> str:
    return (
        json.dumps(value)
        if isinstance(value, str | int | float | bool | list | dict) or value is None
        else "(unset)"
    )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
