"""Server-side evaluation of a flat parameter vector on held-out data."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from phalanx.core.tensors import Manifest, unflatten
from phalanx.engine.engine import Evaluate
from phalanx.workloads.base import ClientData


def classification_evaluator(model: nn.Module, manifest: Manifest, test: ClientData) -> Evaluate:
    """Accuracy and mean cross-entropy of the model with the given parameters."""

    def evaluate(params: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            logits = functional_call(model, unflatten(params, manifest), (test.x,))
            loss = nn.functional.cross_entropy(logits, test.y)
            accuracy = (logits.argmax(dim=1) == test.y).float().mean()
        return {"accuracy": float(accuracy), "loss": float(loss)}

    return evaluate
