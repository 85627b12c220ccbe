"""ALIE and IPM with the attacker's scale optimised against the server's rule.

The fixed-parameter attacks (``alie`` with Baruch's z, ``ipm`` with epsilon 0.1) are what
the papers first published; an attacker who knows the aggregation rule and the validation
bounds does better by choosing the scale for them, as the adaptive evaluations of
Shejwalkar and Houmansadr (NDSS 2021) and Allouah et al. ("Fixing by Mixing", AISTATS 2023)
do: among scales whose crafted update passes the norm checks (``|v| <= max_norm`` and
``|v| <= max_relative_norm x`` the lower median norm of the round's updates, the f crafted
copies included, as validation computes it), take the one whose aggregate -- the server's
real rule run on the honest rows plus f copies -- lies furthest from the honest mean.

The search is a grid over [0, the largest scale the norm bound allows], the papers' fixed
value added to it, then a finer grid around the best point: every candidate is one run of
the rule on the ``n x d`` stack, ``2 x steps`` runs a round in all.

* ALIE (Baruch, Baruch and Goldberg, "A Little Is Enough", NeurIPS 2019):
  ``mean - z std``, z searched.
* IPM (Xie, Koyejo and Gupta, "Fall of Empires", UAI 2019): ``-epsilon mean``, epsilon
  searched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field

from phalanx.faults.attacks import ColludingAttack, RoundView, alie_z

Candidate = Callable[[float], torch.Tensor]  # scale -> crafted update
MARGIN = 1e-4  # relative slack under a norm bound: float32 norms differ from float64 ones


def norm_passes(norm: float, honest_norms: torch.Tensor, view: RoundView) -> bool:
    """Whether an update of ``norm``, sent by the round's f colluders, passes validation's
    absolute and relative norm bounds (the relative one against the lower median of all the
    round's norms, as ``engine.validation`` takes it)."""
    bounds = view.aggregation
    if norm * (1 + MARGIN) > bounds.max_norm:
        return False
    if bounds.max_relative_norm is None:
        return True
    norms: list[float] = sorted([*honest_norms.tolist(), *([norm] * view.f)])
    return norm * (1 + MARGIN) <= bounds.max_relative_norm * norms[(len(norms) - 1) // 2]


def norm_ceiling(honest_norms: torch.Tensor, view: RoundView, limit: float) -> float:
    """An upper bound on any passing norm: the smallest of the relative bound at its most
    generous (every crafted copy above the median), the absolute bound and ``limit``, just
    inside it (``MARGIN``) so that a scale reaching it passes ``norm_passes``."""
    bounds = view.aggregation
    ceiling = min(bounds.max_norm, limit)
    if bounds.max_relative_norm is not None:
        norms: list[float] = sorted([*honest_norms.tolist(), *([math.inf] * view.f)])
        ceiling = min(ceiling, bounds.max_relative_norm * norms[(len(norms) - 1) // 2])
    return ceiling / (1 + 2 * MARGIN)


def damage(view: RoundView, crafted: torch.Tensor) -> float:
    """Distance of the server's aggregate, with every colluder sending ``crafted``, from the
    honest mean (the plain mean stands in for an unknown rule)."""
    stack = view.stack_with(crafted)
    rule = view.aggregation.aggregate
    result = rule(stack) if rule is not None else stack.mean(dim=0)
    return float((result.double() - view.honest.double().mean(dim=0)).norm())


def best_scale(
    view: RoundView, craft: Candidate, high: float, *, fixed: float, steps: int
) -> float:
    """The scale in [0, high] (plus ``fixed``) whose crafted update passes the norm checks
    and does the most damage; a coarse grid then a finer one around its best point. Ties go
    to the smaller scale; 0 when nothing passes."""
    honest_norms = view.honest.double().norm(dim=1)

    def score(scale: float) -> float:
        crafted = craft(scale)
        if not norm_passes(float(crafted.double().norm()), honest_norms, view):
            return -math.inf
        return damage(view, crafted)

    coarse = [high * i / steps for i in range(steps + 1)] + [fixed]
    best = max(sorted(set(coarse)), key=score)
    width = high / steps
    fine = [best + width * (i / steps * 2 - 1) for i in range(steps + 1)]
    candidates = sorted({best, *(s for s in fine if 0 <= s <= high)})
    scores = [score(s) for s in candidates]
    top = max(scores)
    return candidates[scores.index(top)] if top > -math.inf else 0.0


def _largest_scale(base: torch.Tensor, step: torch.Tensor, ceiling: float) -> float:
    """The largest s >= 0 with ``|base + s step| <= ceiling`` (0 when even s = 0 fails, inf
    when ``step`` is zero)."""
    a = float(step.square().sum())
    b = float(base @ step)
    c = float(base.square().sum()) - ceiling**2
    if a == 0:
        return math.inf if c <= 0 else 0.0
    disc = b * b - a * c
    return max((-b + math.sqrt(disc)) / a, 0.0) if disc >= 0 else 0.0


class _Optimised(ColludingAttack):
    steps: int = Field(16, ge=2, description="grid points per search stage")

    def _moments(self, view: RoundView) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(mean, sample std, norm ceiling) of the honest rows, float64."""
        x = view.honest.double()
        std = x.std(dim=0, correction=1 if x.shape[0] > 1 else 0)
        return x.mean(dim=0), std, norm_ceiling(x.norm(dim=1), view, math.inf)


class AlieOptimal(_Optimised):
    """ALIE with z optimised against the rule under the norm checks (Baruch et al., NeurIPS
    2019; adaptive scale as in Shejwalkar and Houmansadr, NDSS 2021)."""

    name: ClassVar[str] = "alie_optimal"
    max_z: float = Field(10.0, gt=0, description="largest z searched")

    def craft_round(self, view: RoundView) -> torch.Tensor:
        mean, std, ceiling = self._moments(view)
        high = min(self.max_z, _largest_scale(mean, -std, ceiling))
        n, f = max(view.n, 2), view.f
        fixed = min(alie_z(n, min(max(f, 1), n // 2)), high)

        def craft(z: float) -> torch.Tensor:
            return (mean - z * std).to(view.honest.dtype)

        return craft(best_scale(view, craft, high, fixed=fixed, steps=self.steps))


class IpmOptimal(_Optimised):
    """IPM with epsilon optimised against the rule under the norm checks (Xie et al., UAI
    2019; adaptive scale as in Allouah et al., AISTATS 2023)."""

    name: ClassVar[str] = "ipm_optimal"
    max_epsilon: float = Field(100.0, gt=0, description="largest epsilon searched")

    def craft_round(self, view: RoundView) -> torch.Tensor:
        mean, _, ceiling = self._moments(view)
        high = min(self.max_epsilon, _largest_scale(torch.zeros_like(mean), -mean, ceiling))

        def craft(epsilon: float) -> torch.Tensor:
            return (-epsilon * mean).to(view.honest.dtype)

        return craft(best_scale(view, craft, high, fixed=min(0.1, high), steps=self.steps))
