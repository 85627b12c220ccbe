"""The built-in workloads' models: small MLPs that train in milliseconds on a CPU."""

from __future__ import annotations

from torch import nn


def mlp(features: int, hidden: int, classes: int) -> nn.Sequential:
    """``features -> hidden -> ReLU -> classes``; with ``hidden == 0`` a single linear layer
    (multinomial logistic regression, as in FedProx's Synthetic experiments).

    Always an ``nn.Sequential``, so parameter names ("0.weight", "0.bias", ...) are stable
    for checkpoints and manifests whichever shape is chosen.
    """
    if hidden == 0:
        return nn.Sequential(nn.Linear(features, classes))
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
