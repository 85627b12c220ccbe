"""Server-side evaluation of a flat parameter vector on held-out data.

Each evaluator keeps its own copy of the model, made when it is built: an evaluation may run
on the engine's executor thread while the next round trains (``Engine.defer_evaluation``),
and ``functional_call`` swaps the parameters of the module it is given for the duration of
the call, which training from the same module (a worker's deep copy of the template, the
batched trainer) must never see.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from phalanx.core.tensors import Manifest, unflatten
from phalanx.engine.engine import Evaluate
from phalanx.errors import ConfigError
from phalanx.faults.poisoning import stamp_trigger
from phalanx.workloads.base import ClientData


def classification_evaluator(model: nn.Module, manifest: Manifest, test: ClientData) -> Evaluate:
    """Accuracy and mean cross-entropy of the model with the given parameters."""
    model = _own_copy(model)

    def evaluate(params: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            logits = functional_call(model, unflatten(params, manifest), (test.x,))
            loss = nn.functional.cross_entropy(logits, test.y)
            accuracy = (logits.argmax(dim=1) == test.y).float().mean()
        return {"accuracy": float(accuracy), "loss": float(loss)}

    return evaluate


def backdoor_evaluator(
    model: nn.Module,
    manifest: Manifest,
    test: ClientData,
    *,
    image_shape: tuple[int, int],
    trigger_size: int,
    value: float,
    target: int,
) -> Evaluate:
    """``backdoor_asr``, the attack success rate: the share of test examples whose true label
    is not ``target`` that the model classifies as ``target`` once the trigger is stamped.
    Examples already of class ``target`` are left out: they would count as successes that
    the backdoor did not cause. The stamped test set is built once, here."""
    keep = test.y != target
    if not bool(keep.any()):
        raise ConfigError(f"backdoor ASR needs test examples of a class other than {target}")
    triggered = stamp_trigger(test.x[keep], image_shape, trigger_size, value)
    model = _own_copy(model)

    def evaluate(params: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            logits = functional_call(model, unflatten(params, manifest), (triggered,))
            hits = (logits.argmax(dim=1) == target).float().mean()
        return {"backdoor_asr": float(hits)}

    return evaluate


def _own_copy(model: nn.Module) -> nn.Module:
    """The evaluator's private copy, in evaluation mode (dropout off, deterministic)."""
    return copy.deepcopy(model).eval()


def combine_evaluators(*evaluators: Evaluate) -> Evaluate:
    """One evaluator whose metrics are all of ``evaluators``' (a later one wins a clash)."""

    def evaluate(params: torch.Tensor) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for each in evaluators:
            metrics.update(each(params))
        return metrics

    return evaluate
