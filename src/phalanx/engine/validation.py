"""Validation of each update on arrival, trusting nothing the client says about itself.

Checks run cheapest first and stop at the first failure, so every rejection carries exactly
one reason. The relative norm bound needs the round's other updates: it lives in
``engine.norms`` and the round's update pool applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, TrainTask
from phalanx.core.tensors import Manifest, flatten, payload_digest, payload_size
from phalanx.types import RejectReason

# Differences are taken this many elements at a time, so validating (or folding) an update
# never allocates more than a chunk beyond the message itself.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Accepted:
    update: ClientUpdate
    params: torch.Tensor  # the flat global model the client was sent
    manifest: Manifest
    norm: float  # of the update: client weights minus ``params``
    weight: float  # examples x work fraction

    def delta_parts(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, piece of the flat delta), one chunk at a time, made on demand."""
        offset = 0
        for spec in self.manifest.specs:
            flat = self.update.tensors[spec.name].reshape(-1)
            for start in range(0, spec.numel, CHUNK):
                piece = flat[start : start + CHUNK]
                begin = offset + start
                yield begin, piece - self.params[begin : begin + piece.numel()]
            offset += spec.numel

    def delta(self) -> torch.Tensor:
        """The whole flat delta (d floats): for aggregators that need the stack."""
        return flatten(self.update.tensors, self.manifest) - self.params


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str


def _schema(update: ClientUpdate, manifest: Manifest) -> Rejected | None:
    names = set(update.tensors)
    if names != set(manifest.names):
        missing = sorted(set(manifest.names) - names)
        extra = sorted(names - set(manifest.names))
        return Rejected(RejectReason.SCHEMA, f"missing {missing}, unexpected {extra}")
    for spec in manifest.specs:
        tensor = update.tensors[spec.name]
        if not isinstance(tensor, torch.Tensor):
            return Rejected(RejectReason.SCHEMA, f"{spec.name} is not a tensor")
        if tuple(tensor.shape) != spec.shape:
            return Rejected(
                RejectReason.SHAPE, f"{spec.name}: {tuple(tensor.shape)} != {spec.shape}"
            )
        if tensor.dtype != torch.float32:
            return Rejected(RejectReason.DTYPE, f"{spec.name}: {tensor.dtype} != float32")
    return None


def _claims(
    update: ClientUpdate, task: TrainTask, declared_examples: int | None
) -> Rejected | None:
    if update.key != task.key:
        return Rejected(RejectReason.ROUND, f"answers {update.key}, expected {task.key}")
    if update.model_version != task.model_version:
        return Rejected(
            RejectReason.VERSION,
            f"trained on version {update.model_version}, dispatched {task.model_version}",
        )
    limit = declared_examples if declared_examples is not None else 2**31
    if not 0 < update.num_examples <= limit:
        return Rejected(RejectReason.EXAMPLES, f"num_examples={update.num_examples}, max {limit}")
    if not 0 < update.work_fraction <= 1:
        return Rejected(RejectReason.EXAMPLES, f"work_fraction={update.work_fraction}")
    return None


def validate_update(
    update: ClientUpdate,
    task: TrainTask,
    manifest: Manifest,
    config: ValidationConfig,
    *,
    declared_examples: int | None = None,
) -> Accepted | Rejected:
    """Accept an update (with its flat delta) or reject it with one reason."""
    problem = _claims(update, task, declared_examples) or _schema(update, manifest)
    if problem:
        return problem
    size = payload_size(update.tensors)
    if size > config.max_update_bytes:
        return Rejected(RejectReason.SIZE, f"{size} bytes > {config.max_update_bytes}")
    if payload_digest(update.tensors) != update.checksum:
        return Rejected(RejectReason.CHECKSUM, "payload does not match its sha256")
    weight = float(update.num_examples * update.work_fraction)
    provisional = Accepted(update, task.params, manifest, 0.0, weight)
    norm = math.hypot(
        *(
            float(torch.linalg.vector_norm(piece, dtype=torch.float64))
            for _, piece in provisional.delta_parts()
        )
    )  # NaN or Inf anywhere (the global model is finite) makes the norm non-finite
    if not math.isfinite(norm):
        return Rejected(RejectReason.NON_FINITE, "NaN or Inf in the update")
    if norm > config.max_norm:
        return Rejected(RejectReason.NORM_ABSOLUTE, f"norm {norm:.4g} > {config.max_norm:.4g}")
    return Accepted(update, task.params, manifest, norm, weight)
