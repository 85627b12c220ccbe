"""Wire contract v1: what the engine sends to clients and what comes back.

Runtimes only move these. Every type is frozen and maps one to one onto a protobuf message
of package ``phalanx.v1`` (the gRPC runtime's serde does that; ``core.codec`` gives them a
byte form of their own). What a message does *not* carry matters as much:

- No model weights in a task: a ``ModelRef`` (version + sha256 of the serialised model)
  names the model, and a client fetches it once per version (``core.models.ModelBook``).
- No coordinator-clock time: a task carries a time-to-live in seconds. The engine keeps its
  own deadline per task, on its own clock, beside the task (collector bookkeeping).
- Nothing a client says about itself is trusted: ``ClientUpdate.sender`` is filled in by the
  transport (who really sent it), and validation checks it, the echoed base model, the steps
  done and the payload digest.

Parameters are float32 on the wire (``core.tensors.WIRE_DTYPE``). The types are slotted: a
round makes several per client (task, key, reply), and a slotted instance is one object for
the garbage collector instead of two, and cheaper to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from phalanx.types import ClientId, FailureKind

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Envelope:
    """Stamped on every message. ``epoch`` is the coordinator's fencing epoch: a client
    refuses work from a lower one. It is 0 for a coordinator that runs without ``--ha``."""

    protocol: int = PROTOCOL_VERSION
    run_id: str = ""
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class TaskKey:
    """Identifies one attempt; submissions are idempotent on this key."""

    round: int
    client: ClientId
    attempt: int


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A published global model: its version and the sha256 of its serialised tensors
    (``core.tensors.payload_digest``), so a fetched copy can be verified."""

    version: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PartialWork:
    """FedProx-style partial work: a client that cannot finish in its time-to-live sends the
    steps it managed, if they are at least ``min_fraction`` of those planned."""

    enabled: bool = False
    min_fraction: float = 0.25


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """How to train: everything a remote client needs besides the model and its data.

    ``max_steps`` is a step budget that caps the ``local_epochs`` passes (None: no cap).
    ``ttl_s`` is the time the client has, counted from when it receives the task.
    """

    local_epochs: int
    batch_size: int
    lr: float
    ttl_s: float
    max_steps: int | None = None
    partial: PartialWork = PartialWork()


@dataclass(frozen=True, slots=True)
class TrainTask:
    envelope: Envelope
    key: TaskKey
    model: ModelRef
    config: TaskConfig


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """A client's reply. Every field is a *claim* until validation has checked it, except
    ``sender``, which the transport sets to the client it really heard from (None: not yet
    set; validation rejects that)."""

    envelope: Envelope
    key: TaskKey
    base: ModelRef  # the model the client trained from, echoed
    steps_done: int
    steps_planned: int
    num_examples: int
    tensors: dict[str, torch.Tensor]  # the client's new weights, by name
    digest: str  # sha256 over the serialised tensors (core.tensors.payload_digest)
    metrics: dict[str, float] = field(default_factory=dict)
    sender: ClientId | None = None

    @property
    def work_fraction(self) -> float:
        """Share of the planned local steps done: the engine's weight factor, derived here
        from the two counts (validation checks 0 < done <= planned first)."""
        return self.steps_done / self.steps_planned if self.steps_planned > 0 else 0.0


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A failure the runtime observed (crash, lost reply) or a client reported. Deadlines are
    the engine's own and never arrive as a message."""

    key: TaskKey
    kind: FailureKind
    detail: str = ""
    envelope: Envelope = Envelope()


Event = ClientUpdate | TaskFailure
