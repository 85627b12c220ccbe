"""The accuracy-under-attack grid: which aggregators meet which attacks, and how to run one
cell. Kept apart from the command so the grid is data a test can check."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from phalanx.aggregation.registry import max_f
from phalanx.config import RunConfig, apply_override, build_config, load_config
from phalanx.scenarios import scenario_path

# The recommended default: the aggregation line of the shipped "robust" scenario.
DEFAULT = "default"

# name -> aggregation table without f (the grid sets f, capped at what the rule tolerates)
AGGREGATORS: dict[str, dict[str, Any]] = {
    "fedavg": {"name": "fedavg"},
    "median": {"name": "median"},
    "trimmed_mean": {"name": "trimmed_mean"},
    "krum": {"name": "krum"},
    "multi_krum": {"name": "multi_krum"},
    "bulyan": {"name": "bulyan"},
    "geometric_median": {"name": "geometric_median"},
    "centered_clipping": {"name": "centered_clipping"},
    "nnm > trimmed_mean": {"name": "trimmed_mean", "pre": [{"name": "nnm"}]},
    DEFAULT: {},
}

# Columns: attack name -> faults.byzantine table without the fraction.
ATTACKS: dict[str, dict[str, Any]] = {
    "sign_flip": {"attack": "sign_flip"},
    "scaling": {"attack": "scaling"},
    "gaussian σ=5": {"attack": "gaussian", "params": {"std": 5.0}},
    "alie": {"attack": "alie"},
    "alie z=1.5": {"attack": "alie", "params": {"z": 1.5}},
    "ipm": {"attack": "ipm"},
    "ipm ε=5": {"attack": "ipm", "params": {"epsilon": 5.0}},
    "label_flip": {"attack": "label_flip"},
    "backdoor": {"attack": "backdoor"},
    "min_max": {"attack": "min_max"},
    "min_sum": {"attack": "min_sum"},
    "mimic": {"attack": "mimic"},
    "alie_optimal": {"attack": "alie_optimal"},
    "ipm_optimal": {"attack": "ipm_optimal"},
}
CLEAN = "clean"


@dataclass(frozen=True)
class Cell:
    dataset: str  # scenario workload: digits or fashion_mnist
    partition: str  # "iid" or "dirichlet0.5"
    fraction: float  # of Byzantine clients; 0 for the clean column
    attack: str  # a key of ATTACKS, or CLEAN
    aggregator: str  # a key of AGGREGATORS
    seed: int

    def key(self) -> str:
        return "|".join(map(str, (self.dataset, self.partition, self.fraction, self.attack,
                                  self.aggregator, self.seed)))  # fmt: skip


@dataclass
class Outcome:
    accuracy: float
    backdoor_asr: float | None
    f: int
    capped: bool  # f lowered to what the rule tolerates
    wall_s: float
    discarded_byzantine: int = 0
    discarded_honest: int = 0
    rounds_failed: int = 0
    # What the aggregator's flags cost honest clients (observability.flags): flags on their
    # updates, and their client-rounds lost to flag sidelining (count and share).
    honest_flagged: int = 0
    honest_rounds_lost: int = 0
    honest_rounds_lost_share: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cell_config(cell: Cell, overrides: list[str]) -> tuple[RunConfig, int, bool]:
    """The run config of one cell, the f it uses and whether f was capped. ``overrides``
    apply after the dataset is chosen, so they may set its own keys (train_examples)."""
    base = load_config(scenario_path("robust")).model_dump(mode="json")
    n = base["workload"]["num_clients"]
    base["seed"] = cell.seed
    if cell.dataset != "digits":
        base["workload"] = {"name": cell.dataset, "num_clients": n}
    for assignment in overrides:
        apply_override(base, assignment)
    alpha = None if cell.partition == "iid" else float(cell.partition.removeprefix("dirichlet"))
    base["workload"]["dirichlet_alpha"] = alpha
    byzantine = round(cell.fraction * n)
    f = base["aggregation"]["f"]
    capped = False
    if cell.aggregator != DEFAULT:
        table = dict(AGGREGATORS[cell.aggregator])
        rule = table["name"]
        f = byzantine if cell.attack != CLEAN else base["aggregation"]["f"]
        tolerated = max_f(rule, n)  # None: the rule (FedAvg) takes no f
        if tolerated is not None and f > tolerated:
            f, capped = tolerated, True
        memory = base["aggregation"]["memory_budget_bytes"]
        base["aggregation"] = {"f": f, "memory_budget_bytes": memory, **table}
        base["validation"] = {**base["validation"], "max_relative_norm": None}
    if cell.attack == CLEAN:
        base["faults"]["byzantine"] = {"fraction": 0.0}
    else:
        base["faults"]["byzantine"] = {"fraction": cell.fraction, **ATTACKS[cell.attack]}
    return build_config(base), f, capped


def run_cell(cell: Cell, overrides: list[str]) -> Outcome:
    """Train one cell to the end; its final-round test accuracy (and backdoor success)."""
    from phalanx.faults.byzantine import byzantine_clients
    from phalanx.observability.flags import flag_outcomes
    from phalanx.simulation import Simulation

    torch.set_num_threads(1)
    config, f, capped = cell_config(cell, overrides)
    start = time.perf_counter()
    result = Simulation(config).run()
    wall = time.perf_counter() - start
    metrics = result.history[-1].get("metrics", {})
    bad = byzantine_clients(config.faults.byzantine, config.workload.num_clients, config.seed)
    discarded = [c for record in result.history for c in record.get("discarded", [])]
    asr = metrics.get("backdoor_asr")
    flags = flag_outcomes(result.history)
    return Outcome(
        accuracy=float(metrics.get("accuracy", math.nan)),
        backdoor_asr=None if asr is None else float(asr),
        f=f,
        capped=capped,
        wall_s=wall,
        discarded_byzantine=sum(1 for c in discarded if c in bad),
        discarded_honest=sum(1 for c in discarded if c not in bad),
        rounds_failed=sum(1 for record in result.history if not record["committed"]),
        honest_flagged=flags["honest_flagged"],
        honest_rounds_lost=flags["honest_rounds_lost"],
        honest_rounds_lost_share=flags["honest_rounds_lost_share"] or 0.0,
    )


def run_job(cell: Cell, overrides: list[str]) -> tuple[Cell, Outcome]:
    """``run_cell`` for a process pool: the cell travels back with its outcome."""
    return cell, run_cell(cell, overrides)
