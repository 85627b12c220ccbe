"""A client, honest or not: what it replies to a task, as wrappers around an honest one.

``HonestClient`` trains (through a ``Trainer``: the SDK on a real node, the simulation's
batched SGD in a simulated one) and seals the result. Each fault is a wrapper that changes
the reply, and wrappers compose: ``Corrupting(Byzantine(HonestClient(...), ...), ...)``.

- ``Crashing``, ``Hanging``, ``Dropping`` reply with a ``ClientFault`` instead of an update:
  what the client does (die, go silent, lose the connection), never a claim it makes. A
  real client process acts it out; the simulation turns it into the failure a transport
  would observe, at a time of its own virtual network.
- ``Corrupting`` damages the update: noise, NaN, scaling are done by the client, which
  seals the damage (the digest matches); a bit flip happens on the link, after sealing.
- ``Byzantine`` sends the adversary's crafted weights (``client.adversary``); colluding
  attacks see the round's honest updates through the adversary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from phalanx.client.adversary import Adversary, RoundGenuine
from phalanx.client.payload import Trained, reseal, seal
from phalanx.core.messages import ClientUpdate, TrainTask
from phalanx.core.models import PublishedModel
from phalanx.faults.corrupt import corrupt_tensors, flip_bits
from phalanx.types import ClientId, Corruption, FailureKind


@dataclass(frozen=True)
class ClientFault:
    """A client that does not reply with an update: ``kind`` is what a transport observes
    (crash, timeout for a hang, drop), ``at_fraction`` how far into the task it happens."""

    kind: FailureKind
    detail: str
    at_fraction: float = 1.0


Reply = ClientUpdate | ClientFault
Trainer = Callable[[TrainTask, PublishedModel], Trained | ClientFault]


class Client(Protocol):
    def train(self, task: TrainTask, model: PublishedModel) -> Reply: ...


@dataclass(frozen=True)
class HonestClient:
    """Trains what it is asked and says so truthfully."""

    client: ClientId
    trainer: Trainer

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        trained = self.trainer(task, model)
        return trained if isinstance(trained, ClientFault) else seal(task, trained)


@dataclass(frozen=True)
class Crashing:
    """Dies ``at_fraction`` of the way through the task: nothing is sent."""

    inner: Client
    at_fraction: float = 0.5

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        return ClientFault(FailureKind.CRASH, "injected crash", self.at_fraction)


@dataclass(frozen=True)
class Hanging:
    """Never replies and never closes its connection: only a deadline finds out."""

    inner: Client

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        return ClientFault(FailureKind.TIMEOUT, "injected hang")


@dataclass(frozen=True)
class Dropping:
    """Its reply is lost on the way and the connection with it (so it trains nothing: the
    update would never arrive)."""

    inner: Client

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        return ClientFault(FailureKind.DROP, "injected drop")


@dataclass(frozen=True)
class Corrupting:
    """Damages the inner client's update with ``corruption``, drawing from ``generator``."""

    inner: Client
    corruption: Corruption
    generator: torch.Generator
    noise_std: float = 1.0
    scale: float = -10.0

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        reply = self.inner.train(task, model)
        if isinstance(reply, ClientFault):
            return reply
        if self.corruption is Corruption.BITFLIP:  # on the link: the digest is the sender's
            return replace(reply, tensors=flip_bits(reply.tensors, generator=self.generator))
        damaged = corrupt_tensors(
            reply.tensors, model.tensors(), self.corruption, generator=self.generator,
            noise_std=self.noise_std, scale=self.scale,
        )  # fmt: skip
        return reseal(reply, damaged)


@dataclass(frozen=True)
class Byzantine:
    """Sends the adversary's weights in place of its own; ``due`` gives a colluding attack
    the round's other genuine replies."""

    inner: Client
    adversary: Adversary
    due: RoundGenuine

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        reply = self.inner.train(task, model)
        if isinstance(reply, ClientFault):
            return reply
        sent = self.adversary.send(task, model, reply.tensors, self.due)
        return reply if sent is reply.tensors else reseal(reply, sent)


@dataclass(frozen=True)
class Observed:
    """An honest client whose genuine update the adversary sees (a colluding attack's
    omniscience, which only a simulation can grant)."""

    inner: Client
    adversary: Adversary

    def train(self, task: TrainTask, model: PublishedModel) -> Reply:
        reply = self.inner.train(task, model)
        if isinstance(reply, ClientUpdate):
            self.adversary.observe(task, model, reply.tensors)
        return reply
