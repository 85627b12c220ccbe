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
from phalanx.errors import ConfigError
from phalanx.scenarios import scenario_path

# The recommended default: the aggregation line of the shipped "robust" scenario.
DEFAULT = "default"

# name -> aggregation table without f (the cell sets f, capped at what the rule tolerates)
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


# How a cell's validation treats every row alike: the scenario's own (the relative-norm
# check included), or the scenario's without ``max_relative_norm``.
VALIDATION_MODES = ("scenario", "no_relative_norm")


@dataclass(frozen=True)
class Cell:
    dataset: str  # scenario workload: digits or fashion_mnist
    partition: str  # "iid" or "dirichlet<alpha>"
    fraction: float  # of Byzantine clients; 0 for the clean column
    attack: str  # a key of ATTACKS, or CLEAN
    aggregator: str  # a key of AGGREGATORS
    seed: int
    # The Byzantine fraction f is sized for: f = round(f_for x n), capped at what the rule
    # tolerates, the same way for every row (the default included). None: the scenario's
    # own f (4 of 20), for every row.
    f_for: float | None = None
    validation: str = "scenario"  # one of VALIDATION_MODES, the same for every row

    def key(self) -> str:
        fields = (self.dataset, self.partition, self.fraction, self.attack, self.aggregator)
        return "|".join(map(str, (*fields, self.seed, self.f_for, self.validation)))


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


def dirichlet_alpha(partition: str) -> float | None:
    """``iid`` -> None; ``dirichlet<alpha>`` -> alpha; anything else is refused."""
    if partition == "iid":
        return None
    try:
        return float(partition.removeprefix("dirichlet"))
    except ValueError:
        raise ConfigError(f"partition {partition!r}: expected iid or dirichlet<alpha>, "
                          "e.g. dirichlet0.5") from None  # fmt: skip


def cell_config(cell: Cell, overrides: list[str]) -> tuple[RunConfig, int, bool]:
    """The run config of one cell, the f it uses and whether f was capped. ``overrides``
    apply after the dataset is chosen, so they may set its own keys (train_examples). Every
    row, the default's included, gets f and validation the same way, so rows compare like
    for like."""
    if cell.validation not in VALIDATION_MODES:
        raise ConfigError(f"validation mode {cell.validation!r}: expected one of "
                          f"{', '.join(VALIDATION_MODES)}")  # fmt: skip
    base = load_config(scenario_path("robust")).model_dump(mode="json")
    n = base["workload"]["num_clients"]
    base["seed"] = cell.seed
    if cell.dataset != "digits":
        base["workload"] = {"name": cell.dataset, "num_clients": n}
    for assignment in overrides:
        apply_override(base, assignment)
    base["workload"]["dirichlet_alpha"] = dirichlet_alpha(cell.partition)
    if cell.aggregator != DEFAULT:
        memory = base["aggregation"]["memory_budget_bytes"]
        table = AGGREGATORS[cell.aggregator]
        base["aggregation"] = {"f": base["aggregation"]["f"], "memory_budget_bytes": memory,
                               **table}  # fmt: skip
    f = base["aggregation"]["f"] if cell.f_for is None else round(cell.f_for * n)
    tolerated = max_f(base["aggregation"]["name"], n)  # None: the rule (FedAvg) takes no f
    capped = False
    if tolerated is not None and f > tolerated:
        f, capped = tolerated, True
    base["aggregation"]["f"] = f
    if cell.validation == "no_relative_norm":
        base["validation"] = {**base["validation"], "max_relative_norm": None}
    if cell.attack == CLEAN:
        base["faults"]["byzantine"] = {"fraction": 0.0}
    else:
        base["faults"]["byzantine"] = {"fraction": cell.fraction, **ATTACKS[cell.attack]}
    config = build_config(base)
    if config.rounds % config.eval_every:
        raise ConfigError(f"a cell reports its final round's test accuracy: rounds "
                          f"({config.rounds}) must be a multiple of eval_every "
                          f"({config.eval_every})")  # fmt: skip
    return config, f, capped


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
