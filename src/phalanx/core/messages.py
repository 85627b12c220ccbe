"""What the engine sends to clients and what comes back. Runtimes only move these."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from phalanx.types import ClientId, FailureKind


@dataclass(frozen=True)
class TaskKey:
    """Identifies one attempt; submissions are idempotent on this key."""

    round: int
    client: ClientId
    attempt: int


@dataclass(frozen=True)
class TrainTask:
    key: TaskKey
    model_version: int
    params: torch.Tensor  # flat float32 global model; never mutated by a client
    deadline: float  # engine-clock time after which the reply is worthless
    issued_at: float


@dataclass
class ClientUpdate:
    """A client's reply. Every field is a *claim* until validation has checked it."""

    key: TaskKey
    model_version: int
    tensors: dict[str, torch.Tensor]  # the client's new weights, by name
    num_examples: int
    work_fraction: float = 1.0  # share of the requested local steps actually done
    checksum: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskFailure:
    """A failure the runtime observed (crash, lost reply). Deadlines are the engine's own."""

    key: TaskKey
    kind: FailureKind
    detail: str = ""


Event = ClientUpdate | TaskFailure
