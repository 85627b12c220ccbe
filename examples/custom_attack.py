"""Your own Byzantine attack, registered by name and run against two aggregators.

A colluding attack gets a ``RoundView`` each round: the honest updates with their client
ids, the colluders' ids, the clients selected, and what the server makes public (round,
model version, global model, the aggregator state it carries, the rule, f and validation's
norm bounds). This one pushes against the direction the server is moving -- the momentum
centred clipping carries from round to round when there is one, else the honest mean --
stretched to just under the longest norm validation would accept, so it stays under the
relative norm check. Registered with ``phalanx.register_attack``, it is chosen in config
like any shipped attack (``faults.byzantine.attack``).

Run: .venv/bin/python examples/custom_attack.py
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from phalanx import ColludingAttack, RoundView, Simulation, build_config, register_attack

torch.set_num_threads(1)

MOMENTUM = "centered_clipping.centre"  # the state centred clipping carries between rounds


class AgainstTheServer(ColludingAttack):
    """The server's direction (its momentum, else the honest mean) reversed, at ``share`` of
    the longest norm validation accepts."""

    name: ClassVar[str] = "against_the_server"
    share: float = Field(0.95, gt=0, le=1, description="fraction of the norm bound used")

    def craft_round(self, view: RoundView) -> torch.Tensor:
        direction = view.server_state.get(MOMENTUM)
        if direction is None or float(direction.norm()) == 0.0:
            direction = view.honest.mean(dim=0)  # round 0, or a rule without momentum
        median_norm = float(view.honest.norm(dim=1).median())
        factor = view.aggregation.max_relative_norm or 1.0  # None: the server did not say
        length = self.share * factor * median_norm
        return -direction / direction.norm().clamp(min=1e-12) * length


register_attack("against_the_server", AgainstTheServer, replace=True)


def run(rule: str, fraction: float, *, rounds: int = 15) -> tuple[float, int]:
    """Final accuracy and the number of crafted updates sent, for ``rule`` against the attack
    at ``fraction`` Byzantine clients."""
    config = build_config(
        {
            "rounds": rounds,
            "eval_every": rounds,
            "workload": {"name": "digits", "num_clients": 10, "dirichlet_alpha": 1.0},
            "training": {"local_epochs": 2, "batch_size": 32, "lr": 0.1},
            "selection": {"clients_per_round": 10, "over_selection": 1.0},
            "aggregation": {"name": rule, "f": 0 if rule == "fedavg" else 2},
            "faults": {
                "enabled": False,
                "byzantine": {"fraction": fraction, "attack": "against_the_server"},
            },
        }
    )
    result = Simulation(config).run()
    accuracy = float(result.history[-1]["metrics"]["accuracy"])
    crafted = sum(
        1 for record in result.history for item in record["injected"] if item["kind"] == "byzantine"
    )
    return accuracy, crafted


def main(rounds: int = 15) -> None:
    for rule, fraction in (("fedavg", 0.0), ("fedavg", 0.2), ("centered_clipping", 0.2)):
        accuracy, crafted = run(rule, fraction, rounds=rounds)
        print(
            f"{rule:>17}, {fraction:.0%} Byzantine: accuracy {accuracy:.3f}, "
            f"{crafted} crafted updates"
        )


if __name__ == "__main__":
    main()
