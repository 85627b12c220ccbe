"""Which cells the held-out report runs: the full grid, or only what the acceptance checks
need; and the finished cells grouped over seeds.

A table is one partition at one *setting*: a Byzantine fraction and the fraction f is sized
for. "f right" sizes f for the attackers actually present; "f under-estimated" keeps f
sized for 20% while 30% attack (f = 4 of 20 against 6), as a shipped default would. Every
row of a table, the default's included, gets its f the same way, capped at what its rule
tolerates. Clean cells have no attacker and the scenario's own f (sized for 20%).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.byzantine.grid import AGGREGATORS, ATTACKS, CLEAN, DEFAULT, Cell
from phalanx.aggregation.registry import max_f
from phalanx.config import load_config
from phalanx.scenarios import scenario_path

PARTITIONS = ("iid", "dirichlet1.0", "dirichlet0.5", "dirichlet0.3", "dirichlet0.1")


@dataclass(frozen=True)
class Setting:
    fraction: float  # Byzantine clients actually present
    f_for: float  # the fraction f is sized for

    @property
    def label(self) -> str:
        if self.f_for == self.fraction:
            return f"{self.fraction:.0%} Byzantine, f right"
        return f"{self.fraction:.0%} Byzantine, f under-estimated (sized for {self.f_for:.0%})"


F_RIGHT = {fraction: Setting(fraction, fraction) for fraction in (0.1, 0.2, 0.3)}
F_UNDER = Setting(0.3, 0.2)
SETTINGS = (*F_RIGHT.values(), F_UNDER)


@functools.cache
def takes_f(aggregator: str) -> bool:
    """Whether the row's rule takes an f at all (FedAvg does not: its f rows are one)."""
    table = AGGREGATORS[aggregator]
    rule = table["name"] if table else load_config(scenario_path("robust")).aggregation.name
    return max_f(rule, 20) is not None  # None or not, whatever n


@dataclass(frozen=True)
class Plan:
    """What the command line asked for; the grids below take their cells from it."""

    dataset: str
    partitions: Sequence[str]
    fractions: Sequence[float]
    aggregators: Sequence[str]
    attacks: Sequence[str]
    seeds: Sequence[int]
    validation: str = "scenario"

    def cell(
        self, partition: str, setting: Setting | None, attack: str, aggregator: str, seed: int
    ) -> Cell:
        fraction, f_for = (0.0, None) if setting is None else (setting.fraction, setting.f_for)
        return Cell(
            self.dataset, partition, fraction, attack, aggregator, seed, f_for, self.validation
        )

    def settings(self) -> list[Setting]:
        return [s for s in SETTINGS if s.fraction in self.fractions]


def full_grid(plan: Plan) -> list[Cell]:
    """Every aggregator x every setting x every attack x partition x seed, plus each
    aggregator's clean run; a rule without f (FedAvg) has no f under-estimated row."""
    cells = []
    for partition in plan.partitions:
        for seed in plan.seeds:
            for aggregator in plan.aggregators:
                cells.append(plan.cell(partition, None, CLEAN, aggregator, seed))
                for setting in plan.settings():
                    if setting.f_for != setting.fraction and not takes_f(aggregator):
                        continue
                    cells += [
                        plan.cell(partition, setting, attack, aggregator, seed)
                        for attack in plan.attacks
                    ]
    return cells


def acceptance_grid(plan: Plan) -> list[Cell]:
    """Only the cells issue 13's acceptance checks read (``acceptance.py``): the default and
    FedAvg clean on every partition; the default under every attack at 20% (IID, Dirichlet
    0.5, 0.3, 0.1) and at 30% Dirichlet 0.5 with f right and under-estimated; FedAvg under
    every attack at 20% Dirichlet 0.1."""
    wanted: list[tuple[str, Setting | None, str]] = []
    for partition in PARTITIONS:
        wanted += [(partition, None, DEFAULT), (partition, None, "fedavg")]
        if partition != "dirichlet1.0":
            wanted.append((partition, F_RIGHT[0.2], DEFAULT))
    wanted += [
        ("dirichlet0.1", F_RIGHT[0.2], "fedavg"),
        ("dirichlet0.5", F_RIGHT[0.3], DEFAULT),
        ("dirichlet0.5", F_UNDER, DEFAULT),
    ]
    cells = []
    for partition, setting, aggregator in wanted:
        if partition not in plan.partitions or aggregator not in plan.aggregators:
            continue
        if setting is not None and setting not in plan.settings():
            continue
        attacks = [CLEAN] if setting is None else plan.attacks
        cells += [
            plan.cell(partition, setting, attack, aggregator, seed)
            for seed in plan.seeds
            for attack in attacks
        ]
    return cells


# partition, setting (None: clean), attack, aggregator
Key = tuple[str, Setting | None, str, str]


def group(cells: Iterable[Mapping[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    """Finished cells (``{"cell": ..., "outcome": ...}``) -> their outcomes over seeds."""
    runs: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for item in cells:
        c = item["cell"]
        setting = None if c["attack"] == CLEAN else Setting(c["fraction"], c["f_for"])
        runs[(c["partition"], setting, c["attack"], c["aggregator"])].append(item["outcome"])
    return dict(runs)


def attacks_in(runs: Mapping[Key, object]) -> list[str]:
    """The attacks the cells measured, in the grid's order."""
    return [a for a in ATTACKS if any(key[2] == a for key in runs)]
