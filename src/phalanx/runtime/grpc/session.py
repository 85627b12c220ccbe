"""Plain types of the ``phalanx.v1`` session calls, beside the v1 contract of core.messages.

A coordinator's handlers take and return these (and the core messages); ``serde`` maps each
one to its protobuf message and back. Like the core contract they are frozen and trusted by
nobody: a ``Caller`` is who a request *says* it comes from, until the coordinator has
checked its session.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from phalanx.core.messages import Envelope, ModelRef, TaskKey, TrainTask
from phalanx.core.tensors import TensorSpec
from phalanx.types import ClientId


@dataclass(frozen=True)
class JoinRequest:
    envelope: Envelope
    client: ClientId
    credential: str
    num_examples: int  # declared; the coordinator's selection weights by it


@dataclass(frozen=True)
class Lease:
    """The coordinator's answer to a join: the session to name in every later call, how
    often to send heartbeats, and how long a silence it tolerates before the client's task
    fails. ``envelope.protocol`` is the coordinator's protocol version."""

    envelope: Envelope
    client: ClientId  # the id the coordinator knows the client by
    session: str
    heartbeat_interval_s: float
    patience_s: float


@dataclass(frozen=True)
class Caller:
    """Who a request says it comes from (every call after a join carries it)."""

    envelope: Envelope
    client: ClientId
    session: str


@dataclass(frozen=True)
class HeartbeatReply:
    """``cancelled``: tasks of this client the coordinator no longer wants (behind NAT, a
    client learns of a cancellation only by asking)."""

    envelope: Envelope
    cancelled: tuple[TaskKey, ...] = ()


class PullStatus(StrEnum):
    TASK = "task"  # ``PullReply.task`` is set
    NONE_YET = "none_yet"  # nothing within the coordinator's wait: poll again
    FINISHED = "finished"  # the run is over: leave


@dataclass(frozen=True)
class PullReply:
    envelope: Envelope
    status: PullStatus
    task: TrainTask | None = None


@dataclass(frozen=True)
class ModelHeader:
    """The first message of a model download: what the chunks that follow hold."""

    envelope: Envelope
    ref: ModelRef
    specs: tuple[TensorSpec, ...]
    total_bytes: int


@dataclass(frozen=True)
class ModelPayload:
    """A published model as it travels: its tensors' specs, in order, and their raw
    little-endian bytes concatenated (a flat float32 vector's own bytes, so no encoding)."""

    envelope: Envelope
    ref: ModelRef
    specs: tuple[TensorSpec, ...]
    data: bytes | memoryview

    @property
    def header(self) -> ModelHeader:
        size = memoryview(self.data).nbytes  # bytes, whatever the view's item format
        return ModelHeader(self.envelope, self.ref, self.specs, size)


@dataclass(frozen=True)
class Chunk:
    """``data`` is bytes ``seq``: chunks of a stream are numbered 0, 1, 2, ..."""

    seq: int
    data: bytes | memoryview  # a view into the received message, when read by serde


@dataclass(frozen=True)
class UpdateHeader:
    """The first message of a push: the update without its tensors, which follow in chunks.
    ``total_bytes`` must equal what ``specs`` describe; the coordinator checks it against
    its size limit before it accepts a single tensor byte."""

    envelope: Envelope
    key: TaskKey
    base: ModelRef
    steps_done: int
    steps_planned: int
    num_examples: int
    metrics: dict[str, float]
    specs: tuple[TensorSpec, ...]
    digest: str
    total_bytes: int


@dataclass(frozen=True)
class PushReceipt:
    """An update received whole (its digest matched); the engine validates it next."""

    envelope: Envelope
    key: TaskKey


@dataclass(frozen=True)
class Ack:
    envelope: Envelope


@dataclass(frozen=True)
class StatusQuery:
    """An operator's ``Status`` call (``phalanx status``): whether ``credential`` may ask is
    the coordinator's decision."""

    envelope: Envelope
    credential: str = ""


@dataclass(frozen=True)
class MemberStatus:
    client: ClientId
    live: bool
    heartbeat_age_s: float | None  # None: not heard from since the coordinator started


@dataclass(frozen=True)
class CoordinatorStatus:
    """What ``Status`` answers: the members, the round in flight (None between rounds and
    after the run), and the rounds committed and discarded so far."""

    envelope: Envelope
    members: tuple[MemberStatus, ...]
    round_in_flight: int | None
    rounds_committed: int
    rounds_failed: int = 0
