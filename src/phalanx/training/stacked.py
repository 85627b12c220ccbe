"""k copies of one model, trained at once: parameters stacked along a leading client axis.

A model made of ``nn.Linear`` layers and element-wise activations in an ``nn.Sequential`` runs
as batched matrix products (``baddbmm``) in a feature-major layout: a batch is
``(k, features, batch)``, weights keep nn.Linear's ``(out, in)`` orientation, biases are
stored as ``(k, out, 1)`` and logits come out ``(k, classes, batch)``. Reducing
cross-entropy over a non-last class axis is about 1.6x faster on CPU than row-major.
Any other module runs row-major through ``torch.func.vmap`` over ``functional_call``:
slower, but general.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from phalanx.core.tensors import Manifest, unflatten

_ELEMENTWISE: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu,
    nn.Tanh: torch.tanh,
    nn.Sigmoid: torch.sigmoid,
    nn.GELU: nn.functional.gelu,
    nn.Identity: lambda x: x,
}

# d(activation)/d(input) times the incoming gradient, written in terms of the activation's
# *output*, for the activations whose backward pass phalanx computes by hand.
_BACKWARD: dict[type[nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda out, grad: grad * (out > 0),
    nn.Tanh: lambda out, grad: grad * (1 - out * out),
    nn.Sigmoid: lambda out, grad: grad * out * (1 - out),
    nn.Identity: lambda out, grad: grad,
}

# One layer of the fast path: an activation, or (weight index, bias index or None).
_Op = type[nn.Module] | tuple[int, int | None]


def _linear_plan(model: nn.Module, names: tuple[str, ...]) -> list[_Op] | None:
    if not isinstance(model, nn.Sequential) or any(True for _ in model.buffers()):
        return None
    plan: list[_Op] = []
    for prefix, layer in model.named_children():
        if isinstance(layer, nn.Linear):
            bias = names.index(f"{prefix}.bias") if layer.bias is not None else None
            plan.append((names.index(f"{prefix}.weight"), bias))
        elif type(layer) in _ELEMENTWISE:
            plan.append(type(layer))
        else:
            return None
    return plan


class StackedModel:
    """Forward passes of k models at once, on a list of stacked leaf tensors."""

    def __init__(self, model: nn.Module, manifest: Manifest) -> None:
        self._manifest = manifest
        self._module = model
        self._plan = _linear_plan(model, manifest.names)
        self.feature_major = self._plan is not None
        self.manual_backward = self._plan is not None and all(
            isinstance(op, tuple) or op in _BACKWARD for op in self._plan
        )
        self._vmapped = vmap(
            lambda p, x: functional_call(model, dict(zip(manifest.names, p, strict=True)), (x,))
        )

    def activation_floats(self, example: torch.Tensor) -> int:
        """Floats every leaf module outputs for one ``example``: what a forward pass keeps
        per sample for the backward pass (one forward on a batch of one, in eval mode so
        that no running statistics move, hooks counting)."""
        counted = [0]

        def count(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                counted[0] += output.numel()

        leaves = [m for m in self._module.modules() if not any(True for _ in m.children())]
        hooks = [m.register_forward_hook(count) for m in leaves]
        training = self._module.training
        try:
            with torch.no_grad():
                self._module.eval()(example.unsqueeze(0))
        finally:
            self._module.train(training)
            for hook in hooks:
                hook.remove()
        return counted[0]

    def leaves(self, params: torch.Tensor, k: int) -> list[torch.Tensor]:
        """k trainable copies of the flat global parameters, in this model's layout."""
        out = []
        for view in unflatten(params, self._manifest).values():
            if self.feature_major and view.dim() == 1:
                view = view.unsqueeze(1)  # a bias, as a column
            copies = view.expand(k, *view.shape).clone()
            out.append(copies if self.manual_backward else copies.requires_grad_())
        return out

    def flatten(self, leaves: list[torch.Tensor]) -> torch.Tensor:
        k = leaves[0].shape[0]
        return torch.cat([t.detach().reshape(k, -1) for t in leaves], dim=1)

    def logits(self, leaves: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits with classes on axis 1: ``(k, classes, batch)``."""
        if self._plan is None:
            return self._vmapped(tuple(leaves), x).transpose(1, 2)  # type: ignore[no-any-return]
        return self._forward(leaves, x, self._plan)[-1]

    @staticmethod
    def _forward(
        leaves: list[torch.Tensor], x: torch.Tensor, plan: list[_Op]
    ) -> list[torch.Tensor]:
        """Every layer's input, then the logits (what the hand-written backward needs)."""
        saved = [x]
        for op in plan:
            if not isinstance(op, tuple):
                x = _ELEMENTWISE[op](x)
            elif op[1] is None:
                x = torch.bmm(leaves[op[0]], x)
            else:
                x = torch.baddbmm(leaves[op[1]], leaves[op[0]], x)
            saved.append(x)
        return saved

    def sgd_step(
        self, leaves: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
        weight: torch.Tensor | float, lr: float,
    ) -> torch.Tensor:  # fmt: skip
        """One SGD step on cross-entropy with the backward pass written out by hand (only
        when ``manual_backward``): for a small MLP the autograd engine's bookkeeping costs
        as much as the arithmetic. ``weight`` scales each sample's loss: ``(k, 1, batch)``
        or a number. Returns the per-sample losses ``(k, batch)``."""
        plan = self._plan
        if plan is None or not self.manual_backward:
            raise ValueError("sgd_step needs a Linear/ReLU/Tanh/Sigmoid Sequential")
        with torch.no_grad():
            saved = self._forward(leaves, x, plan)
            log_probs = saved[-1].log_softmax(dim=1)
            target = y.unsqueeze(1)
            per_sample = -log_probs.gather(1, target).squeeze(1)
            grad = log_probs.exp_().scatter_add_(1, target, torch.full_like(log_probs[:, :1], -1.0))
            grad = grad * weight
            grads: list[torch.Tensor] = [torch.empty(0)] * len(leaves)
            for index in range(len(plan) - 1, -1, -1):
                op, inputs, output = plan[index], saved[index], saved[index + 1]
                if not isinstance(op, tuple):
                    grad = _BACKWARD[op](output, grad)
                    continue
                grads[op[0]] = torch.bmm(grad, inputs.transpose(1, 2))
                if op[1] is not None:
                    grads[op[1]] = grad.sum(dim=2, keepdim=True)
                if index > 0:
                    grad = torch.bmm(leaves[op[0]].transpose(1, 2), grad)
            torch._foreach_add_(leaves, grads, alpha=-lr)
        return per_sample
