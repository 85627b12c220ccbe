"""Model poisoning: what a Byzantine client sends in place of its honest update, and the
public API for writing one.

Every attack works on flat deltas (a client's weights minus the global model it received,
one float32 vector) with pure, vectorised torch code. They come in two shapes:

* ``ModelAttack.craft(genuine, generator)`` turns the client's own genuine delta into the
  one it sends (sign flipping, scaling, Gaussian noise): it needs nothing but its own
  training;
* ``ColludingAttack.craft_round(view)`` gets a ``RoundView`` -- the round's honest deltas
  with their client ids, the colluders' ids, the clients selected so far, and the server's
  public state (round, model version, global model, the aggregator state it carries such as
  centred clipping's momentum, the aggregation rule, f and the validation bounds, and the
  rule itself as a callable on an ``n x d`` stack) -- as the omniscient adversary of the
  literature does, and crafts one vector that every Byzantine client of the round sends
  (ALIE, IPM, min-max, mimic...). Identical vectors are what let them shift a
  coordinate-wise median or pass a distance-based filter together.

An attack's parameters are its pydantic model, so a bad key or value is a ``ConfigError``
naming it. ``phalanx.faults.byzantine.ATTACKS`` maps names to these classes; user code adds
its own with ``phalanx.register_attack("my_attack", MyAttack)`` (see
examples/custom_attack.py).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import ClassVar

import torch
from pydantic import Field

from phalanx.core.named import Params
from phalanx.errors import ConfigError

StackRule = Callable[[torch.Tensor], torch.Tensor]  # n x d stack -> d aggregate


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


@dataclass(frozen=True)
class AggregationView:
    """The server's public aggregation setup, as a colluding attacker may know it.

    ``aggregate`` runs the server's actual rule (its pre-aggregation steps included) on an
    ``n x d`` stack of deltas with unit weights; None when the attacker does not know it.
    The norm bounds are validation's: an update longer than ``max_norm``, or than
    ``max_relative_norm`` x the (lower) median norm of the round's updates, is rejected.
    """

    rule: str = "fedavg"
    f: int = 0
    max_norm: float = math.inf
    max_relative_norm: float | None = None
    aggregate: StackRule | None = None


@dataclass(frozen=True)
class RoundView:
    """What the colluders of one round see: the input of ``ColludingAttack.craft_round``.

    ``honest`` is ``k x d`` (one honest delta per row, in ``honest_clients`` order: sorted
    client id, then attempt; a client retried in the round may appear once per attempt),
    ``byzantine_clients`` the colluders in the round, ``selected`` every client the server
    had asked in the round when the colluders crafted (over-selection and replacements
    included), ``n`` the number of clients the server aims to aggregate. When no honest
    update has arrived yet, ``honest`` holds the colluders' own genuine deltas instead
    (their ids in ``honest_clients``). The server's public state: ``round_index``,
    ``model_version``, ``global_model`` (flat; None when not known), ``server_state`` (the
    aggregator state the server carries into the round, e.g. centred clipping's momentum
    under ``"centered_clipping.centre"``; empty when there is none or it is not known)
    and ``aggregation`` (the rule, the server's configured f, the norm bounds).
    """

    honest: torch.Tensor
    honest_clients: tuple[int, ...]
    byzantine_clients: tuple[int, ...]
    n: int
    round_index: int = 0
    model_version: int = 0
    global_model: torch.Tensor | None = None
    aggregation: AggregationView = field(default_factory=AggregationView)
    selected: tuple[int, ...] = ()
    server_state: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.honest.dim() != 2 or self.honest.shape[0] != len(self.honest_clients):
            raise ConfigError(
                f"RoundView: honest is {tuple(self.honest.shape)}, expected one row per "
                f"honest client ({len(self.honest_clients)})"
            )

    @property
    def f(self) -> int:
        """Byzantine clients in the round (the colluders)."""
        return len(self.byzantine_clients)

    def stack_with(self, crafted: torch.Tensor) -> torch.Tensor:
        """The ``(k + f) x d`` stack the server would aggregate if every colluder sent
        ``crafted``, rows in canonical (client id) order."""
        order = sorted(
            [(c, i) for i, c in enumerate(self.honest_clients)]
            + [(c, -1) for c in self.byzantine_clients]
        )
        rows = [self.honest[i] if i >= 0 else crafted for _, i in order]
        return torch.stack(rows) if rows else crafted[None]


class Attack(Params):
    """An attack's parameters and its action at the message boundary (base of all)."""

    name: ClassVar[str]

    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The delta to send instead of ``genuine``; None sends the genuine update as it is."""
        return None

    def check_round(self, clients_per_round: int) -> None:
        """Raise ``ConfigError`` if the attack cannot run on rounds of this size."""


class ModelAttack(Attack):
    """A per-client attack: each Byzantine client transforms its own genuine delta.

    Subclass it, give it a ``name`` class attribute and pydantic fields for its parameters,
    and implement ``craft``: draw any randomness from ``generator`` (derived from the seed,
    round, client and attempt) so runs are reproducible."""

    @abstractmethod
    def craft(self, genuine: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class ColludingAttack(Attack):
    """An omniscient attack: one vector per round, from a ``RoundView`` of the round.

    Subclass it and implement ``craft_round``; it must be a pure function of the view (and
    the attack's parameters), so a resumed round crafts the same vector."""

    @abstractmethod
    def craft_round(self, view: RoundView) -> torch.Tensor:
        """The delta every Byzantine client of the round sends."""

    def collude(self, honest: torch.Tensor, *, n: int, f: int) -> torch.Tensor:
        """``craft_round`` on a view without client ids or server state (``honest`` is
        ``k x d``, ``n`` the round's clients, ``f`` the colluders): the call of runtimes
        that do not build a ``RoundView`` yet. Ids are stand-ins: honest 0..k-1, then f."""
        k = honest.shape[0]
        view = RoundView(honest, tuple(range(k)), tuple(range(k, k + f)), n)
        return self.craft_round(view)


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

    def craft_round(self, view: RoundView) -> torch.Tensor:
        n, f = view.n, view.f
        z = self.z if self.z is not None else alie_z(n, min(max(f, 1), n // 2))
        return alie(view.honest, z)

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

    def craft_round(self, view: RoundView) -> torch.Tensor:
        return ipm(view.honest, self.epsilon)
