"""The seed scenario's workload, exported for Flower's processes, which cannot import phalanx.

phalanx builds the data and the initial model exactly as a run of the scenario does
(``build_workload``, ``initial_model``), and they are written as plain arrays in one
``.npz`` (read back with ``allow_pickle=False``): every client's examples, the test set,
the model's sizes and its initial parameters, so both frameworks train the same model
from the same start on the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from phalanx.config import RunConfig, SeedWorkload, load_config
from phalanx.errors import ConfigError
from phalanx.scenarios import scenario_path
from phalanx.simulation import initial_model
from phalanx.workloads import build_workload

# Same work on both sides: no injected faults (Flower has none), no over-selection (Flower
# asks exactly its sample), one evaluation of the global model per round (both).
SAME_WORK = ("faults.enabled=false", "selection.over_selection=1.0")


def scenario(name: str, rounds: int | None) -> tuple[RunConfig, list[str]]:
    """The scenario with the same-work overrides (and ``rounds`` if given)."""
    overrides = [*SAME_WORK, *([f"rounds={rounds}"] if rounds else [])]
    config = load_config(scenario_path(name), overrides)
    if not isinstance(config.workload, SeedWorkload):
        raise ConfigError(f"{name}: the Flower app implements the seed workload only")
    return config, overrides


def export(config: RunConfig, path: Path) -> None:
    workload = build_workload(config.workload, config.seed)
    model = initial_model(workload.make_model, config.seed)
    spec = config.workload
    if not isinstance(spec, SeedWorkload):
        raise ConfigError("the Flower app implements the seed workload only")
    arrays: dict[str, np.ndarray] = {
        "clients_x": torch.stack([c.x for c in workload.clients]).numpy(),
        "clients_y": torch.stack([c.y for c in workload.clients]).numpy(),
        "test_x": workload.test.x.numpy(),
        "test_y": workload.test.y.numpy(),
        "features": np.array(spec.features),
        "hidden": np.array(spec.hidden),
        "classes": np.array(spec.classes),
    }
    for name, tensor in model.state_dict().items():
        arrays[f"init/{name}"] = tensor.detach().numpy()
    np.savez(path, **arrays)  # type: ignore[arg-type]
