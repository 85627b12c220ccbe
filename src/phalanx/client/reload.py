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
    return _fingerprint(list(model.modules()), list(model.parameters()))


def _fingerprint(modules: list[nn.Module], params: list[nn.Parameter]) -> Fingerprint:
    """``fingerprint`` over a model's modules and parameters as listed when it was copied:
    a module or parameter added or replaced since shows in its parent's dicts, which are
    part of the fingerprint, so the lists need not be walked again."""
    ids: list[object] = []
    for module in modules:
        attributes = vars(module)
        ids.extend(attributes)
        ids.extend(attributes.values())
        for value in attributes.values():
            if isinstance(value, dict):
                ids.extend(value)
                ids.extend(value.values())
    values: list[object] = []
    for param in params:
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
    """One process's copy of the template, reloaded for each attempt (see module docstring).

    The copy's parameters, buffers and modules are listed once, when it is made: walking a
    model's module tree costs more than the reload itself, and the fingerprint taken after
    each attempt catches any change that would make the lists stale.
    """

    def __init__(self, template: nn.Module) -> None:
        self._template = template
        self._reuse = _reusable(template)
        self._model: nn.Module | None = None
        self._print: Fingerprint = ([], [])
        self._params: list[tuple[str, nn.Parameter, nn.Parameter]] = []  # name, copy's, template's
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []  # copy's, template's
        self._modules: list[nn.Module] = []
        self._lent = False  # loaded and not yet released: it may not be in training mode

    def load(self, params: Mapping[str, torch.Tensor]) -> nn.Module:
        """The copy, in training mode, holding ``params`` and the template's buffers."""
        model = self._model
        if model is None or not self._reuse:
            model = self._fresh()
        elif self._lent:
            model.train()
        with torch.no_grad():
            for name, param, original in self._params:
                param.copy_(params[name])
                param.grad = None
                param.requires_grad_(original.requires_grad)
            for buffer, initial in self._buffers:
                buffer.copy_(initial)
        self._lent = True
        return model

    def release(self, model: nn.Module) -> None:
        """After an attempt: keep the copy only if the attempt left it as a reload expects."""
        self._lent = False
        if not all(module.training for module in self._modules):
            model.train()  # an attempt may end in eval mode: not a change a reload misses
        if model is not self._model or not same(
            _fingerprint(self._modules, [p for _, p, _ in self._params]), self._print
        ):
            self._model = None

    def _fresh(self) -> nn.Module:
        """A new deep copy of the template, in training mode, and its lists."""
        model = self._model = copy.deepcopy(self._template).train()
        self._modules = list(model.modules())
        self._params = [
            (name, param, original)
            for (name, param), original in zip(
                model.named_parameters(), self._template.parameters(), strict=True
            )
        ]
        self._buffers = list(zip(model.buffers(), self._template.buffers(), strict=True))
        self._print = _fingerprint(self._modules, [p for _, p, _ in self._params])
        return model


__all__ = ["Fingerprint", "ReloadedCopy", "fingerprint", "same"]
