"""The interface between the engine and any aggregation rule.

A rule gets the round's accepted updates as rows of an ``n x d`` tensor, their weights and
a ``RoundContext``, and returns an ``Aggregate``: the step, which input rows it discarded or
scaled down (for the run summary), and any state it carries to the next committed round
(centred clipping's centre). Rules are pure: all cross-round state travels through
``RoundContext.state`` and ``Aggregate.state``, so a resumed run aggregates exactly as an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, NoReturn, Protocol, TypeVar, runtime_checkable

import torch

from phalanx.core.named import Params
from phalanx.errors import AggregationError
from phalanx.types import ClientId, RejectReason

P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class RoundContext:
    """What a rule may know beyond the updates: the run's seed and the round, for random
    draws (bucketing), and the state it left after the last committed round.

    ``clients`` names the client behind each row (canonical order), for parts that judge a
    client over rounds (``persistent_flags``); empty when the caller does not say. ``f``,
    when set, is this round's f in place of the aggregator's configured one: the engine
    passes ``effective_f`` so that updates validation already rejected are not counted
    twice. ``refused`` counts the clients whose update validation refused this round on
    the relative-norm bound, which f keeps counting (``SENDER_FAULTS``): parts that judge
    clients (``persistent_flags``) take them off the rows they may flag, so that a round
    whose attackers were all refused flags no honest client in their place."""

    seed: int = 0
    round_index: int = 0
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)
    clients: tuple[int, ...] = ()
    f: int | None = None
    refused: int = 0


# Rejections that prove the sender itself faulty: what it sealed (the checksum matched) is
# malformed, not finite, longer than the absolute bound, too large, or claims more examples
# or steps than it could have. Not among them: a checksum mismatch (the link may have
# damaged an honest update), a stale version or round (an honest client that is late), a
# wrong sender (the transport's), and the relative norm bound -- an honest heterogeneous
# client can exceed it, and colluders who send short updates lower the median it is taken
# against, which would let them talk f down.
SENDER_FAULTS: frozenset[RejectReason] = frozenset(
    {
        RejectReason.SCHEMA,
        RejectReason.SHAPE,
        RejectReason.DTYPE,
        RejectReason.SIZE,
        RejectReason.NON_FINITE,
        RejectReason.NORM_ABSOLUTE,
        RejectReason.EXAMPLES,
    }
)


def effective_f(assumed: int, *, rejected: int) -> int:
    """This round's f: the ``assumed`` Byzantine updates per round less the ``rejected``
    ones, the updates validation refused as proof of a faulty sender (``SENDER_FAULTS``).
    f counts every arbitrary update a round may hold, and a refused update is no longer in
    the stack, so the rule need not tolerate it again; tolerating fewer lets it keep more
    honest rows (trim less, discard less) and accept a round with fewer rows."""
    if assumed < 0 or rejected < 0:
        raise AggregationError(f"f and rejected must be >= 0; got f={assumed}, {rejected}")
    return max(assumed - rejected, 0)


def round_f(assumed: int, rejections: Iterable[tuple[ClientId, RejectReason | None]]) -> int:
    """``effective_f`` for a round whose validation refused ``rejections`` ((client,
    reason) pairs, the round's events): one off f per distinct client refused for a
    ``SENDER_FAULTS`` reason."""
    faulty = {client for client, reason in rejections if reason in SENDER_FAULTS}
    return effective_f(assumed, rejected=len(faulty))


def refused_relative(rejections: Iterable[tuple[ClientId, RejectReason | None]]) -> int:
    """``RoundContext.refused`` for a round whose validation refused ``rejections``: the
    distinct clients refused on the relative-norm bound."""
    return len({client for client, reason in rejections if reason is RejectReason.NORM_RELATIVE})


@dataclass(frozen=True)
class Aggregate:
    """A rule's result. ``discarded`` lists input rows that had no say in ``vector``;
    ``scaled`` maps input rows that were clipped to the factor (in [0, 1)) applied;
    ``flagged`` lists rows a rule judged suspicious (the health monitor may learn from it)."""

    vector: torch.Tensor
    discarded: tuple[int, ...] = ()
    scaled: Mapping[int, float] = field(default_factory=dict)
    flagged: tuple[int, ...] = ()
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Aggregator(Protocol):
    """Combines ``n`` client updates (rows of an ``n x d`` tensor) into one ``d`` vector.

    Rows are update *deltas* (client weights minus the global model), in canonical order
    (sorted client id); ``weights`` are non-negative example counts scaled by work done.
    """

    name: str

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, context: RoundContext | None = None
    ) -> Aggregate: ...


@runtime_checkable
class StreamingAggregator(Aggregator, Protocol):
    """An aggregator that can also fold updates in one at a time in O(d) memory.

    ``add`` takes one update as ``(offset, piece)`` parts of its flat delta, so a caller can
    produce the delta a chunk at a time and never hold a second copy of the update.
    """

    def begin(self, dim: int) -> None: ...
    def add(self, parts: Iterable[tuple[int, torch.Tensor]], weight: float) -> None: ...
    def finish(self) -> torch.Tensor: ...


def check_inputs(updates: torch.Tensor, weights: torch.Tensor) -> None:
    """Shared precondition: a non-empty 2-D stack and one non-negative weight per row."""
    if updates.dim() != 2 or updates.shape[0] == 0:
        raise AggregationError(
            f"expected a non-empty n x d tensor, got shape {tuple(updates.shape)}"
        )
    if weights.shape != (updates.shape[0],):
        raise AggregationError(
            f"expected {updates.shape[0]} weights, got shape {tuple(weights.shape)}"
        )
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise AggregationError("weights must be finite and non-negative")
    if float(weights.sum()) <= 0:
        raise AggregationError("weights sum to zero: nothing to average")


class Part(Generic[P]):
    """A rule or a pre-aggregation step: its registry name and its checked parameters."""

    name: str
    # (a, b): the part tolerates f Byzantine rows among n when n >= a f + b; None: it
    # makes no promise about f (the plain mean, bucketing).
    tolerance: ClassVar[tuple[int, int] | None] = None

    def __init__(self, params: P) -> None:
        self.params = params

    @classmethod
    def max_f(cls, n: int) -> int | None:
        """The largest f this part tolerates among n rows; None when it takes no f."""
        if cls.tolerance is None:
            return None
        a, b = cls.tolerance
        return max((n - b) // a, 0)

    def require_tolerance(self, n: int, f: int) -> None:
        """Fail, with the numbers, when n rows cannot tolerate f Byzantine ones."""
        if self.tolerance is not None:
            require(self.name, n=n, f=f, f_times=self.tolerance[0], plus=self.tolerance[1])


class FollowedPart(Part[P]):
    """A step that adapts to the parts after it: the pipeline tells it their tolerances
    (``follow``), so it never leaves them fewer rows than they need for f."""

    def __init__(self, params: P) -> None:
        super().__init__(params)
        self._after: tuple[tuple[int, int], ...] = ()  # (a, b): a part after needs a f + b

    def follow(self, tolerances: Sequence[tuple[int, int]]) -> None:
        """The tolerances (n >= a f + b) of the parts that take this step's rows."""
        self._after = tuple(tolerances)

    def rows_needed(self, f: int) -> int:
        """The most rows any part after this one needs for ``f`` (1 when none does)."""
        return max((a * f + b for a, b in self._after), default=1)


def require(rule: str, *, n: int, f: int, f_times: int = 2, plus: int = 1) -> None:
    """A rule's tolerance precondition n >= f_times x f + plus (by default an honest
    majority), failing with the numbers, e.g. "bulyan needs n >= 4f + 3; got n=9, f=2"."""
    if n < f_times * f + plus:
        refuse(rule, f"n >= {f_times}f + {plus}", n=n, f=f)


def refuse(rule: str, condition: str, *, n: int, f: int) -> NoReturn:
    """Fail a precondition that depends on more than n and f, with the numbers."""
    raise AggregationError(f"{rule} needs {condition}; got n={n}, f={f}")
