"""Colluding attacks that adapt to the honest updates: min-max, min-sum and mimic.

* Min-max and min-sum (Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing
  Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, their
  aggregator-agnostic attacks): the colluders send ``mean + gamma p`` with ``p`` a
  perturbation direction (``unit_vec``: minus the unit mean; ``sign``: minus the mean's
  signs; ``std``: minus the coordinate-wise std) and ``gamma`` the largest scale such that the
  crafted update is no further from the honest ones than they are from each other: its
  largest squared distance to an honest update stays within the largest honest pairwise one
  (min-max), or its summed squared distance within the largest honest sum (min-sum).
  The paper finds ``gamma`` by binary search; each squared distance is a quadratic in
  ``gamma`` (``|D_i|^2 - 2 gamma D_i.p + gamma^2 |p|^2`` with ``D_i = x_i - mean``), so the
  largest feasible ``gamma`` -- the limit that search converges to -- is a root in closed
  form, computed for all rows at once from the k x k Gram matrix of the centred rows.
* Mimic (Karimireddy, He and Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
  via Bucketing", ICLR 2022): every colluder copies one honest update, the one that most
  over-represents the honest spread (the largest projection on the top principal direction
  of the centred honest updates), so the aggregate leans towards one client's data; or a
  fixed client's, when it is in the round.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from phalanx.faults.attacks import ColludingAttack, RoundView

Direction = Literal["unit_vec", "sign", "std"]


def perturbation(honest: torch.Tensor, direction: Direction) -> torch.Tensor:
    """The direction ``p`` the crafted update moves along from the honest mean (float64)."""
    x = honest.double()
    mean = x.mean(dim=0)
    if direction == "unit_vec":
        norm = float(mean.norm())
        return -mean / norm if norm > 0 else torch.zeros_like(mean)
    if direction == "sign":
        return -torch.sign(mean)
    return -x.std(dim=0, correction=1 if x.shape[0] > 1 else 0)


def _centred(honest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, centred rows, squared pairwise distances), float64."""
    x = honest.double()
    mean = x.mean(dim=0)
    centred = x - mean
    gram = centred @ centred.T
    diag = gram.diagonal()
    return mean, centred, (diag[:, None] + diag[None, :] - 2 * gram).clamp(min=0)


def min_max_gamma(honest: torch.Tensor, p: torch.Tensor) -> float:
    """The largest gamma >= 0 with ``max_i |mean + gamma p - x_i|^2 <= max_ij |x_i - x_j|^2``.

    Row i allows gamma up to the larger root of ``c g^2 + 2 b_i g + a_i - T = 0`` (a_i =
    |D_i|^2 <= T since the mean lies in the honest hull, so that root is >= 0); the
    crafted update must satisfy every row."""
    _, centred, sq = _centred(honest)
    c = float(p.double().square().sum())
    if c == 0:
        return 0.0
    a = centred.square().sum(dim=1)
    b = -(centred @ p.double())
    roots = (-b + (b.square() - c * (a - sq.max())).clamp(min=0).sqrt()) / c
    return float(roots.min().clamp(min=0))


def min_sum_gamma(honest: torch.Tensor, p: torch.Tensor) -> float:
    """The largest gamma >= 0 with ``sum_i |mean + gamma p - x_i|^2 <= max_i sum_j |x_i -
    x_j|^2``. The linear term vanishes (the centred rows sum to zero): gamma =
    sqrt((T - sum_i a_i) / (k |p|^2)), with T >= sum_i a_i as the mean minimises the sum."""
    _, centred, sq = _centred(honest)
    c = float(p.double().square().sum())
    if c == 0:
        return 0.0
    slack = float(sq.sum(dim=1).max() - centred.square().sum())
    return math.sqrt(max(slack, 0.0) / (honest.shape[0] * c))


class _DistanceBounded(ColludingAttack):
    direction: Direction = Field(
        "std", description="perturbation: unit_vec (minus unit mean), sign, or std"
    )

    def _gamma(self, honest: torch.Tensor, p: torch.Tensor) -> float:
        raise NotImplementedError

    def craft_round(self, view: RoundView) -> torch.Tensor:
        honest = view.honest
        p = perturbation(honest, self.direction)
        gamma = self._gamma(honest, p)
        return (honest.double().mean(dim=0) + gamma * p).to(honest.dtype)


class MinMax(_DistanceBounded):
    """Min-max (Shejwalkar and Houmansadr, NDSS 2021): mean + gamma p, gamma the largest with
    the crafted update's largest distance to an honest one within the honest diameter."""

    name: ClassVar[str] = "min_max"

    def _gamma(self, honest: torch.Tensor, p: torch.Tensor) -> float:
        return min_max_gamma(honest, p)


class MinSum(_DistanceBounded):
    """Min-sum (Shejwalkar and Houmansadr, NDSS 2021): mean + gamma p, gamma the largest with
    the crafted update's summed squared distance within the largest honest one."""

    name: ClassVar[str] = "min_sum"

    def _gamma(self, honest: torch.Tensor, p: torch.Tensor) -> float:
        return min_sum_gamma(honest, p)


def mimic_choice(honest: torch.Tensor) -> int:
    """Index of the honest row with the largest (absolute) projection on the top principal
    direction of the centred rows: from the top eigenvector u of the k x k centred Gram
    matrix, as that projection is proportional to u_i. Ties go to the lower index."""
    _, centred, _ = _centred(honest)
    if honest.shape[0] == 1:
        return 0
    _, vectors = torch.linalg.eigh(centred @ centred.T)  # ascending eigenvalues
    top = vectors[:, -1].abs()
    return int(torch.nonzero(top >= top.max() * (1 - 1e-9))[0])


class Mimic(ColludingAttack):
    """Mimic (Karimireddy, He and Jaggi, ICLR 2022): every colluder sends a copy of one honest
    update, ``client``'s when it is in the round, else the one most aligned with the honest
    updates' top principal direction."""

    name: ClassVar[str] = "mimic"
    client: int | None = Field(
        None, ge=0, description="the honest client to copy; null: top principal direction"
    )

    def craft_round(self, view: RoundView) -> torch.Tensor:
        if self.client is not None and self.client in view.honest_clients:
            return view.honest[view.honest_clients.index(self.client)].clone()
        return view.honest[mimic_choice(view.honest)].clone()
