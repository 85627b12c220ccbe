"""Helpers for engine tests on the scripted twin: a config, a one-parameter-vector model and
one round run from a fresh state."""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from phalanx.config import RunConfig, build_config
from phalanx.core.state import ServerState
from phalanx.core.tensors import Manifest
from phalanx.engine.engine import Engine
from phalanx.engine.membership import Membership
from phalanx.engine.ports import Runtime

MANIFEST = Manifest.of({"w": torch.zeros(3)})


def twin_config(clients: int, *overrides: str, **sections: dict[str, Any]) -> RunConfig:
    """A custom workload of ``clients`` clients; no norm reference held back, no faults."""
    tree: dict[str, Any] = {
        "workload": {"name": "custom", "num_clients": clients},
        "validation": {"reference_updates": 0},
        **sections,
    }
    return build_config(tree, list(overrides))


def one_round(
    config: RunConfig, runtime: Runtime, membership: Membership, state: ServerState | None = None
) -> tuple[ServerState, dict[str, Any]]:
    """Run one round; the new state and the round's record (as JSON)."""
    engine = Engine(config, runtime, membership=membership, models=getattr(runtime, "models", None))
    state = state or engine.initial_state(torch.zeros(MANIFEST.dim), MANIFEST)
    new_state, record = asyncio.run(engine.run_round(state))
    return new_state, record.to_json()
