"""Model poisoning: what a Byzantine client sends in place of its honest update.

Every attack works on flat deltas (a client's weights minus the global model it received,
one float32 vector) with pure, vectorised torch code. They come in two shapes:

* ``ModelAttack.craft`` turns the client's own genuine delta into the one it sends
  (sign flipping, scaling, Gaussian noise): it needs nothing but its own training;
* ``ColludingAttack.collude`` sees the round's honest deltas, as the omniscient adversary of
  the literature does, and crafts one vector that every Byzantine client of the round sends
  (ALIE, IPM). Sending identical vectors is what lets them shift a coordinate-wise median or
  pass a distance-based filter together.

An attack's parameters are its pydantic model, so a bad key or value is a ``ConfigError``
naming it; ``phalanx.faults.byzantine`` maps names to these classes.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from statistics import NormalDist
from typing import ClassVar

import torch
from pydantic import Field

from phalanx.core.named import Params
from phalanx.errors import ConfigError


def sign_flip(delta: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``-scale * delta``: the update pulls the model back the way honest training moves it."""
    return delta * -scale


def scale_update(delta: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * delta``: with factor n/eta one update replaces the FedAvg aggregate."""
    return delta * factor


def gaussian_noise(dim: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """An update of pure N(0, std^2) noise, drawn from the caller's derived generator."""
    return torch.randn(dim, generator=generator) * std


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max: s = floor(n/2 + 1) - f honest workers must be "won over" so a
    majority looks like the attackers; z = Phi^-1((n - s) / n) is how far (in standard
    deviations) a value can sit from the mean while still closer than s of the honest ones.
    """
    s = math.floor(n / 2 + 1) - f
    if not 0 < s < n:
        raise ValueError(
            f"ALIE's z needs 0 < s < n with s = floor(n/2 + 1) - f; got n={n}, f={f}, s={s}"
        )
    return NormalDist().inv_cdf((n - s) / n)


def alie(honest: torch.Tensor, z: float) -> torch.Tensor:
    """``mean - z * std`` of the honest ``k x d`` deltas, coordinate-wise. The standard
    deviation is the sample one (ddof 1, as ByzFL), the population one when ``k`` is 1."""
    std = honest.std(dim=0, correction=1 if honest.shape[0] > 1 else 0)
    return honest.mean(dim=0) - z * std


def ipm(honest: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``-epsilon * mean`` of the honest ``k x d`` deltas: a small step against the true
    direction that makes the inner product of the aggregate with it negative."""
    return honest.mean(dim=0) * -epsilon


class Attack(Params):
    """An attack's parameters and its action at the message boundary (base of all)."""

    name: ClassVar[str]

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The delta to send instead of ``genuine``; None sends the genuine update as it is."""
        return None

    def check_round(self, clients_per_round: int) -> None:
        """Raise ``ConfigError`` if the attack cannot run on rounds of this size."""


class ModelAttack(Attack):
    """A per-client attack: each Byzantine client transforms its own genuine delta."""

    @abstractmethod
    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class ColludingAttack(Attack):
    """An omniscient attack: one vector per round, from the round's honest deltas."""

    @abstractmethod
    def collude(self, honest: torch.Tensor, *, n: int, f: int) -> torch.Tensor:
        """The delta every Byzantine client of the round sends; ``honest`` is ``k x d``, ``n``
        the round's number of clients and ``f`` the Byzantine ones among them."""


class SignFlip(ModelAttack):
    """Sign flipping (Li et al., "RSA", AAAI 2019; Allen-Zhu et al., ICLR 2021)."""

    name: ClassVar[str] = "sign_flip"
    scale: float = Field(1.0, gt=0, description="the flipped delta is multiplied by this")

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return sign_flip(genuine, self.scale)


class Scaling(ModelAttack):
    """Model replacement (Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS
    2020): the delta scaled by ``factor`` = n/eta; 20 is n=20 clients at server rate 1."""

    name: ClassVar[str] = "scaling"
    factor: float = Field(20.0, description="the delta is multiplied by this (n / server rate)")

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return scale_update(genuine, self.factor)


class Gaussian(ModelAttack):
    """Gaussian noise as the update (Xie et al., "Generalized Byzantine-tolerant SGD", 2018)."""

    name: ClassVar[str] = "gaussian"
    std: float = Field(1.0, gt=0, description="std of the noise sent as the update")

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return gaussian_noise(genuine.numel(), self.std, generator)


class Alie(ColludingAttack):
    """A Little Is Enough (Baruch et al., NeurIPS 2019): ``mean - z * std`` of the honest
    deltas. Without ``z``, Baruch's z_max for the round's n and f (see ``alie_z``), with f
    kept in [1, floor(n/2)] where that formula is defined."""

    name: ClassVar[str] = "alie"
    z: float | None = Field(
        None, description="std multiples below the mean; null: Baruch's z from n, f"
    )

    def collude(self, honest: torch.Tensor, *, n: int, f: int) -> torch.Tensor:
        z = self.z if self.z is not None else alie_z(n, min(max(f, 1), n // 2))
        return alie(honest, z)

    def check_round(self, clients_per_round: int) -> None:
        if self.z is None and clients_per_round < 2:
            raise ConfigError(
                "attack 'alie' derives z from n clients per round and needs n >= 2; "
                f"got n={clients_per_round}: set faults.byzantine.params.z"
            )


class Ipm(ColludingAttack):
    """Inner Product Manipulation (Xie et al., "Fall of Empires", UAI 2019):
    ``-epsilon * mean`` of the honest deltas."""

    name: ClassVar[str] = "ipm"
    epsilon: float = Field(0.1, gt=0, description="the update is -epsilon x the honest mean")

    def collude(self, honest: torch.Tensor, *, n: int, f: int) -> torch.Tensor:
        return ipm(honest, self.epsilon)
