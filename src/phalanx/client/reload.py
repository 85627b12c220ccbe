"""One copy of the user's model per process, reloaded for each attempt instead of deep-copied.

A process that runs many attempts (a simulation worker, a real client) keeps one copy of the
template and reloads it for every attempt: parameters from the global weights, buffers from
the template, gradients cleared, ``requires_grad`` as the template has it. An attempt that
changes the model in any other way the reload would miss (an added hook or attribute, a
changed setting such as a dropout rate, a replaced parameter or submodule) is detected after
it returns and the copy is thrown away, so the next attempt starts from a fresh deep copy:
nothing one attempt does leaks into the next.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping
from typing import TypeAlias

import torch
from torch import nn

Fingerprint: TypeAlias = tuple[list[object], list[object]]  # (by identity, by value)


def fingerprint(model: nn.Module) -> Fingerprint:
    """What a reload does not restore: every attribute of every module (hooks, submodules,
    settings, the parameter and buffer dicts and their contents) by identity, and each
    parameter's tensor hooks by identity and its shape and dtype by value. Taken in training
    mode, which every attempt starts in."""
    ids: list[object] = []
    for module in model.modules():
        for name, value in vars(module).items():
            ids += (name, value)
            if isinstance(value, dict):
                ids.extend(value)
                ids.extend(value.values())
    values: list[object] = []
    for param in model.parameters():
        ids += (param._backward_hooks, getattr(param, "_post_accumulate_grad_hooks", None))
        values += (param.shape, param.dtype)
    return ids, values


def same(a: Fingerprint, b: Fingerprint) -> bool:
    """The same objects in the same places, and the same shapes and dtypes."""
    return len(a[0]) == len(b[0]) and all(map(operator.is_, a[0], b[0])) and a[1] == b[1]


def _reusable(model: nn.Module) -> bool:
    """A model whose modules hold tensors outside parameters and buffers is never reused:
    the reload could not restore them."""
    return not any(isinstance(v, torch.Tensor) for m in model.modules() for v in vars(m).values())


class ReloadedCopy:
    """One process's copy of the template, reloaded for each attempt (see module docstring)."""

    def __init__(self, template: nn.Module) -> None:
        self._template = template
        self._reuse = _reusable(template)
        self._model: nn.Module | None = None
        self._print: Fingerprint = ([], [])

    def load(self, params: Mapping[str, torch.Tensor]) -> nn.Module:
        """The copy, in training mode, holding ``params`` and the template's buffers."""
        model = self._model
        if model is None or not self._reuse:
            model = self._model = copy.deepcopy(self._template).train()
            self._print = fingerprint(model)
        with torch.no_grad():
            for (name, param), (_, original) in zip(
                model.named_parameters(), self._template.named_parameters(), strict=True
            ):
                param.copy_(params[name])
                param.grad = None
                param.requires_grad_(original.requires_grad)
            for buffer, initial in zip(model.buffers(), self._template.buffers(), strict=True):
                buffer.copy_(initial)
        return model.train()

    def release(self, model: nn.Module) -> None:
        """After an attempt: keep the copy only if the attempt left it as a reload expects."""
        model.train()  # an attempt may end in eval mode: not a change a reload misses
        if not same(fingerprint(model), self._print):
            self._model = None


__all__ = ["Fingerprint", "ReloadedCopy", "fingerprint", "same"]
