"""The client's side of the wire: sealing what it trained into a ``ClientUpdate``, and
checking a model it fetched.

The digest covers the serialised tensors (name, dtype, shape, bytes; ``payload_digest``), so
the coordinator detects any change between the client's hands and validation. The sender is
left empty: only the transport knows who really sent a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from phalanx.core.codec import decode_model
from phalanx.core.messages import ClientUpdate, ModelRef, TrainTask
from phalanx.core.tensors import payload_digest
from phalanx.errors import ProtocolError

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Trained:
    """What local training produced, before anything is sent."""

    tensors: Tensors
    num_examples: int
    steps_done: int
    steps_planned: int
    metrics: Mapping[str, float]


def seal(task: TrainTask, trained: Trained) -> ClientUpdate:
    """The update answering ``task``: the task's envelope, key and model echoed, the
    trained tensors and their digest."""
    return ClientUpdate(
        envelope=task.envelope, key=task.key, base=task.model,
        steps_done=trained.steps_done, steps_planned=trained.steps_planned,
        num_examples=trained.num_examples, tensors=trained.tensors,
        digest=payload_digest(trained.tensors), metrics=dict(trained.metrics),
    )  # fmt: skip


def reseal(update: ClientUpdate, tensors: Tensors) -> ClientUpdate:
    """``update`` sending ``tensors`` instead, with their own digest (what a client that
    alters its own update does: the damage passes integrity checks)."""
    return replace(update, tensors=tensors, digest=payload_digest(tensors))


def receive_model(data: bytes, expected: ModelRef) -> Tensors:
    """The tensors of a fetched model, checked against the reference the task carried."""
    ref, tensors = decode_model(data)
    if ref != expected:
        raise ProtocolError(
            f"fetched model version {ref.version} ({ref.sha256[:12]}), the task names "
            f"{expected.version} ({expected.sha256[:12]})"
        )
    return tensors
