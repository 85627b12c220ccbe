"""Your own Byzantine attack, registered by name and run against two aggregators.

A colluding attack gets a ``RoundView`` each round: the honest updates with their client
ids, the colluders' ids and what the server makes public (round, model version, global
model, the rule, f and validation's norm bounds). This one sends the honest mean reversed,
stretched to just under the longest norm validation would accept -- an inner-product
manipulation that stays under the relative norm check. Registered in ``ATTACKS``, it is
chosen in config like any shipped attack (``faults.byzantine.attack``).

Run: .venv/bin/python examples/custom_attack.py
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from phalanx.config import build_config
from phalanx.faults.attacks import ColludingAttack, RoundView
from phalanx.faults.byzantine import ATTACKS
from phalanx.simulation import Simulation

torch.set_num_threads(1)


class ReversedMean(ColludingAttack):
    """The honest mean, reversed, at ``share`` of the longest norm validation accepts."""

    name: ClassVar[str] = "reversed_mean"
    share: float = Field(0.95, gt=0, le=1, description="fraction of the norm bound used")

    def craft_round(self, view: RoundView) -> torch.Tensor:
        mean = view.honest.mean(dim=0)
        median_norm = float(view.honest.norm(dim=1).median())
        factor = view.aggregation.max_relative_norm or 1.0  # None: the server did not say
        length = self.share * factor * median_norm
        return -mean / mean.norm().clamp(min=1e-12) * length


ATTACKS.register("reversed_mean", ReversedMean)


def run(rule: str, fraction: float) -> None:
    config = build_config(
        {
            "rounds": 15,
            "eval_every": 15,
            "workload": {"name": "digits", "num_clients": 10, "dirichlet_alpha": 1.0},
            "training": {"local_epochs": 2, "batch_size": 32, "lr": 0.1},
            "selection": {"clients_per_round": 10, "over_selection": 1.0},
            "aggregation": {"name": rule, "f": 0 if rule == "fedavg" else 2},
            "faults": {
                "enabled": False,
                "byzantine": {"fraction": fraction, "attack": "reversed_mean"},
            },
        }
    )
    result = Simulation(config).run()
    accuracy = result.history[-1]["metrics"]["accuracy"]
    crafted = sum(
        1 for record in result.history for item in record["injected"] if item["kind"] == "byzantine"
    )
    print(
        f"{rule:>12}, {fraction:.0%} Byzantine: accuracy {accuracy:.3f}, {crafted} crafted updates"
    )


run("fedavg", 0.0)
for rule in ("fedavg", "trimmed_mean"):
    run(rule, 0.2)
