"""Which faults this client process plays, and the client it composes for each task.

The launcher passes a client the faults of the scenario's plan that fall on it: either the
plan itself (``--inject-faults``: the very ``FaultPlan`` the simulation consults, keyed by
this client's tasks, with its Byzantine role) or explicit ``--fault`` specs, such as
``crash@2`` (round 2, every attempt), ``corrupt:nan@3.1`` (round 3, attempt 1) or
``straggle@*`` (every task). The reply comes from the client package: an honest client
wrapped in ``Byzantine`` (model attacks), ``Corrupting``, ``Crashing`` or ``Hanging``, as in
the simulation; the process then acts a fault out for real (``agent``): a crash kills the
process, a hang goes silent, a straggler is slow, a drop cuts the connection mid-push.

Colluding attacks (ALIE, IPM, min-max, min-sum, mimic and the optimised ones) craft one
vector from the round's honest updates, which only a simulation can see: a client process
refuses them at start-up with a ``ConfigError`` naming the attack.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from phalanx.client import (
    Adversary,
    Byzantine,
    Client,
    Corrupting,
    Crashing,
    Hanging,
    HonestClient,
    Trainer,
)
from phalanx.config import RunConfig
from phalanx.core.messages import TaskKey
from phalanx.core.rng import torch_rng
from phalanx.core.tensors import Manifest
from phalanx.errors import ConfigError
from phalanx.faults.attacks import ColludingAttack
from phalanx.faults.plan import FaultDecision, FaultPlan
from phalanx.types import Corruption, FaultKind

SPEC = re.compile(
    r"^(?P<kind>[a-z]+)(?::(?P<detail>[a-z]+))?@(?P<round>\*|\d+)(?:\.(?P<attempt>\d+))?$"
)


class FaultSource(Protocol):
    def decide(self, key: TaskKey) -> FaultDecision | None: ...


@dataclass(frozen=True)
class FaultSpec:
    decision: FaultDecision
    round: int | None  # None: every round
    attempt: int | None  # None: every attempt

    def covers(self, key: TaskKey) -> bool:
        return self.round in (None, key.round) and self.attempt in (None, key.attempt)


def parse_fault(text: str) -> FaultSpec:
    """``KIND[:CORRUPTION]@ROUND[.ATTEMPT]`` (ROUND may be ``*``), e.g. ``corrupt:nan@2``."""
    match = SPEC.match(text.strip())
    kinds = ", ".join(k.value for k in FaultKind)
    if match is None:
        raise ConfigError(
            f"--fault {text!r} is not KIND[:CORRUPTION]@ROUND[.ATTEMPT] (e.g. crash@2, "
            f"corrupt:nan@*); kinds: {kinds}"
        )
    try:
        kind = FaultKind(match["kind"])
    except ValueError:
        raise ConfigError(f"--fault {text!r}: unknown kind; kinds: {kinds}") from None
    corruption = _corruption(text, kind, match["detail"])
    round_index = None if match["round"] == "*" else int(match["round"])
    attempt = int(match["attempt"]) if match["attempt"] is not None else None
    return FaultSpec(FaultDecision(kind, corruption), round_index, attempt)


def _corruption(text: str, kind: FaultKind, detail: str | None) -> Corruption | None:
    if kind is not FaultKind.CORRUPT:
        if detail is not None:
            raise ConfigError(f"--fault {text!r}: only corrupt takes a :CORRUPTION")
        return None
    try:
        return Corruption(detail or Corruption.NOISE.value)
    except ValueError:
        choices = ", ".join(c.value for c in Corruption)
        raise ConfigError(f"--fault {text!r}: unknown corruption; corruptions: {choices}") from None


@dataclass(frozen=True)
class Faults:
    """Explicit specs first (the first that covers a task wins), then the scenario's plan."""

    specs: tuple[FaultSpec, ...] = ()
    plan: FaultPlan | None = None

    def decide(self, key: TaskKey) -> FaultDecision | None:
        for spec in self.specs:
            if spec.covers(key):
                return spec.decision
        return self.plan.decide(key) if self.plan is not None else None


def build_faults(specs: Sequence[str], config: RunConfig, *, inject: bool) -> Faults:
    plan = FaultPlan(config.faults, seed=config.seed) if inject else None
    return Faults(tuple(parse_fault(s) for s in specs), plan)


def process_adversary(
    config: RunConfig, manifest: Manifest, population: int, client: int
) -> Adversary | None:
    """The adversary this client serves when the scenario makes it Byzantine (a data attack
    also poisons its data: ``work.poisoned``)."""
    adversary = Adversary.of(config, manifest, population)
    if adversary is None or not adversary.is_byzantine(client):
        return None
    if isinstance(adversary.attack, ColludingAttack):
        raise ConfigError(
            f"attack {adversary.attack.name!r} colludes: it crafts its update from the "
            "round's honest updates, which a client process cannot see; run it in the "
            "simulation (phalanx run), or use sign_flip, scaling, gaussian, label_flip or "
            "backdoor"
        )
    return adversary


def compose(
    client: int,
    trainer: Trainer,
    decision: FaultDecision | None,
    key: TaskKey,
    *,
    config: RunConfig,
    adversary: Adversary | None,
) -> Client:
    """The task's client: honest, Byzantine when this client is, then faulty as decided (a
    straggler or a dropper trains honestly: its fault is timing, or the link)."""
    composed: Client = HonestClient(client, trainer)
    if adversary is not None:  # a data attack's craft sends the (poisoned) genuine update
        composed = Byzantine(composed, adversary, list)
    kind = decision.kind if decision is not None else None
    if kind is FaultKind.CRASH and decision is not None:
        return Crashing(composed, decision.fraction)
    if kind is FaultKind.HANG:
        return Hanging(composed)
    if kind is FaultKind.CORRUPT and decision is not None and decision.corruption is not None:
        faults = config.faults
        rng = torch_rng(config.seed, "corrupt", key.round, key.client, key.attempt)
        return Corrupting(composed, decision.corruption, rng, faults.noise_std, faults.scale)
    return composed
