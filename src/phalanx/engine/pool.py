"""The accepted updates of a round, holding as few tensors as the aggregator allows.

A streaming aggregator (FedAvg) folds each update into a running sum as it arrives, so a
round needs O(d) memory for any number of clients. The relative norm bound needs a
reference: the median over the norms accepted in the last committed round (``prior``) and
in this round so far. Until that reference rests on ``reference_updates`` norms (only in
the first round, or after a run of discarded ones), updates are held back, then checked
together and folded; afterwards each is checked on arrival. The prior matters: a median of
this round's first few arrivals alone can be captured by a few corrupted ones. An aggregator
that needs every update at once (the robust ones) holds the n x d stack; the pool refuses to
grow it past the memory budget.
Folding follows arrival order, which the simulation makes deterministic.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

from phalanx.aggregation.base import Aggregate, Aggregator, RoundContext, StreamingAggregator
from phalanx.config import ValidationConfig
from phalanx.engine.norms import NormReference
from phalanx.engine.validation import Accepted, Rejected
from phalanx.errors import AggregationError
from phalanx.errors import MemoryBudgetError as MemoryBudgetError  # its old home
from phalanx.types import ClientId

Outliers = list[tuple[Accepted, Rejected]]


class Member(NamedTuple):
    """What the round remembers of an accepted update once its tensor is folded away (a
    named tuple: a round makes k, and a tuple is built in C)."""

    client: ClientId
    attempt: int
    weight: float
    work_fraction: float


def stack_bytes(count: int, dim: int) -> int:
    return count * dim * 4


class UpdatePool:
    def __init__(
        self,
        aggregator: Aggregator,
        config: ValidationConfig,
        *,
        dim: int,
        budget_bytes: int,
        prior_norms: list[float] | None = None,
    ) -> None:
        self._aggregator = aggregator
        self._config = config
        self._dim = dim
        self._budget = budget_bytes
        self._stream = aggregator if isinstance(aggregator, StreamingAggregator) else None
        self._streaming = self._stream is not None
        self._held: dict[ClientId, Accepted] = {}
        self._members: dict[ClientId, Member] = {}
        self._reference = NormReference(config, prior_norms or ())
        self._reference_updates = config.reference_updates
        self._norms: list[float] = []  # of every update accepted this round, folded or held
        if self._stream is not None:
            self._stream.begin(dim)

    @property
    def count(self) -> int:
        return len(self._members)

    def members(self) -> list[Member]:
        """Accepted updates in canonical order (sorted client id)."""
        return [self._members[c] for c in sorted(self._members)]

    def accepted_norms(self) -> list[float]:
        """Norms of this round's accepted updates: the next round's prior."""
        return list(self._norms)

    def held_bytes(self) -> int:
        return stack_bytes(len(self._held), self._dim)

    def add(self, item: Accepted) -> Outliers:
        """Accept ``item``, unless the relative norm bound rejects it (or others) now."""
        stream = self._stream
        if stream is not None and len(self._reference) >= self._reference_updates:
            verdict = self._reference.violation(item.norm)  # the common case, kept short
            if verdict is not None:
                return [(item, verdict)]
            self._admit(item)
            stream.add(item.parts(), item.weight)
            return []
        if not self._streaming and stack_bytes(len(self._held) + 1, self._dim) > self._budget:
            raise MemoryBudgetError(
                f"aggregator {self._aggregator.name!r} needs all updates at once: "
                f"{len(self._held) + 1} x {self._dim} float32 = "
                f"{stack_bytes(len(self._held) + 1, self._dim)} bytes exceeds "
                f"aggregation.memory_budget_bytes = {self._budget}"
            )
        self._admit(item)
        self._held[item.update.key.client] = item.lean()
        if self._streaming and self._reference_size() >= self._config.reference_updates:
            return self.review(fold=True)
        return []

    def review(self, *, fold: bool = False) -> Outliers:
        """Check the held updates against the median norm of *every* accepted update (held
        or already folded); with ``fold``, fold the ones that pass."""
        outliers = [
            (item, verdict)
            for item in self._held.values()
            if (verdict := self._check_against_median(item)) is not None
        ]
        for item, _ in outliers:
            self._forget(item.update.key.client)
        if fold:
            self._fold_held()
        return outliers

    def aggregate(self, context: RoundContext) -> tuple[Aggregate, list[ClientId]]:
        """The round's step from every accepted update, and the clients behind the rows that
        ``Aggregate.discarded`` and ``Aggregate.scaled`` refer to (canonical order)."""
        if not self._members:
            raise AggregationError("no accepted updates to aggregate")
        if self._stream is not None:
            self._fold_held()
            return Aggregate(self._stream.finish()), []
        order = sorted(self._held)
        deltas = torch.stack([self._held[c].delta() for c in order])
        weights = torch.tensor([self._held[c].weight for c in order], dtype=torch.float32)
        # The rows' clients, for parts that judge a client over rounds (persistent flags).
        context = replace(context, clients=tuple(order))
        return self._aggregator.aggregate(deltas, weights, context), order

    def _check_against_median(self, item: Accepted) -> Rejected | None:
        return self._reference.violation(item.norm)

    def _reference_size(self) -> int:
        return len(self._reference)

    def _admit(self, item: Accepted) -> None:
        key = item.update.key
        self._members[key.client] = Member(
            key.client, key.attempt, item.weight, item.update.work_fraction
        )
        self._norms.append(item.norm)
        self._reference.add(item.norm)

    def _forget(self, client: ClientId) -> None:
        item = self._held.pop(client)
        del self._members[client]
        self._norms.remove(item.norm)
        self._reference.remove(item.norm)

    def _fold_held(self) -> None:
        for client in sorted(self._held) if self._stream is not None else ():
            self._fold(self._held.pop(client))

    def _fold(self, item: Accepted) -> None:
        if self._stream is not None:
            self._stream.add(item.parts(), item.weight)
