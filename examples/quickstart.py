"""Your model, your clients' data, your fault plan: a federated run in about 20 lines.

Run: .venv/bin/python examples/quickstart.py
"""

import torch
from torch import nn

import phalanx as px

torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
centres = torch.randn(4, 16, generator=gen) * 0.6  # a 4-class toy task, overlapping


def client_data(n: int) -> px.ClientData:
    y = torch.randint(0, 4, (n,), generator=gen)
    return px.ClientData(centres[y] + torch.randn(n, 16, generator=gen), y)


config = px.build_config(
    {
        "rounds": 15,
        "selection": {"clients_per_round": 6},
        "quorum": {"min_updates": 3},
        "training": {"lr": 0.05, "local_epochs": 2},
        "faults": {"rules": [{"rate": 0.25, "kinds": ["crash", "hang", "corrupt"]}]},
    }
)
simulation = px.Simulation(
    config,
    model=lambda: nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)),
    clients=[client_data(int(n)) for n in torch.randint(30, 120, (12,), generator=gen)],
    test=client_data(400),
)
result = simulation.run()
last = result.history[-1]
print(f"accuracy {last['metrics']['accuracy']:.3f} after {result.state.model_version} commits")
print("faults injected:", result.faults_fired)
