"""Validation of each update on arrival, trusting nothing the client says about itself.

Checks run cheapest first and stop at the first failure, so every rejection carries exactly
one reason. The update is checked against the task the engine dispatched (its key, the
model reference it carried, its step budget) and against the round's flat parameters, which
the collector holds: the message itself carries only a reference to the model. The relative
norm bound needs the round's other updates: it lives in ``engine.norms`` and the round's
update pool applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, TrainTask
from phalanx.core.tensors import (
    WIRE_DTYPE,
    WIRE_DTYPE_NAME,
    Manifest,
    dtype_name,
    flatten,
    payload_digest,
    payload_size,
)
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
        if tensor.dtype != WIRE_DTYPE:
            return Rejected(
                RejectReason.DTYPE, f"{spec.name}: {dtype_name(tensor.dtype)} != {WIRE_DTYPE_NAME}"
            )
    return None


def _claims(
    update: ClientUpdate, task: TrainTask, declared_examples: int | None
) -> Rejected | None:
    if update.sender != task.key.client:
        return Rejected(
            RejectReason.SENDER, f"sent by {update.sender}, the task went to {task.key.client}"
        )
    if update.key != task.key:
        return Rejected(RejectReason.ROUND, f"answers {update.key}, expected {task.key}")
    if update.base != task.model:
        return Rejected(
            RejectReason.VERSION,
            f"trained on version {update.base.version} ({update.base.sha256[:12]}), "
            f"dispatched {task.model.version} ({task.model.sha256[:12]})",
        )
    limit = declared_examples if declared_examples is not None else 2**31
    if not 0 < update.num_examples <= limit:
        return Rejected(RejectReason.EXAMPLES, f"num_examples={update.num_examples}, max {limit}")
    return _steps(update, task)


def _steps(update: ClientUpdate, task: TrainTask) -> Rejected | None:
    """0 < done <= planned, and planned within the task's step budget when it set one."""
    done, planned, budget = update.steps_done, update.steps_planned, task.config.max_steps
    if not 0 < done <= planned or (budget is not None and planned > budget):
        return Rejected(
            RejectReason.EXAMPLES, f"steps done {done} of {planned} planned (budget {budget})"
        )
    return None


def validate_update(
    update: ClientUpdate,
    task: TrainTask,
    params: torch.Tensor,
    manifest: Manifest,
    config: ValidationConfig,
    *,
    declared_examples: int | None = None,
) -> Accepted | Rejected:
    """Accept an update (with its flat delta from ``params``, the model ``task`` referred
    to) or reject it with one reason."""
    problem = _claims(update, task, declared_examples) or _schema(update, manifest)
    if problem:
        return problem
    size = payload_size(update.tensors)
    if size > config.max_update_bytes:
        return Rejected(RejectReason.SIZE, f"{size} bytes > {config.max_update_bytes}")
    if payload_digest(update.tensors) != update.digest:
        return Rejected(RejectReason.CHECKSUM, "payload does not match its sha256")
    weight = float(update.num_examples * update.work_fraction)
    provisional = Accepted(update, params, manifest, 0.0, weight)
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
    return Accepted(update, params, manifest, norm, weight)
