"""Validation of each update on arrival, trusting nothing the client says about itself.

Checks run cheapest first and stop at the first failure, so every rejection carries exactly
one reason. The relative norm bound needs the round's other updates and runs once collection
ends (``relative_norm_outliers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from phalanx.config import ValidationConfig
from phalanx.core.messages import ClientUpdate, TrainTask
from phalanx.core.tensors import Manifest, flatten, payload_digest, payload_size
from phalanx.types import RejectReason


@dataclass(frozen=True)
class Accepted:
    update: ClientUpdate
    delta: torch.Tensor  # flat: client weights minus the dispatched global model
    norm: float
    weight: float  # examples x work fraction


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
    delta = flatten(update.tensors, manifest) - task.params
    if not bool(torch.isfinite(delta).all()):
        return Rejected(RejectReason.NON_FINITE, "NaN or Inf in the update")
    norm = float(torch.linalg.vector_norm(delta))
    if norm > config.max_norm:
        return Rejected(RejectReason.NORM_ABSOLUTE, f"norm {norm:.4g} > {config.max_norm:.4g}")
    return Accepted(update, delta, norm, float(update.num_examples * update.work_fraction))


def relative_norm_outliers(
    accepted: Sequence[Accepted], config: ValidationConfig
) -> list[tuple[Accepted, Rejected]]:
    """Updates whose norm exceeds ``max_relative_norm`` times the round's median norm.

    The median (lower median for even counts) of n norms tolerates up to half of them being
    arbitrary, so a minority of scaled or noisy updates cannot raise the bar for itself.
    """
    factor = config.max_relative_norm
    if factor is None or len(accepted) < config.relative_min_updates:
        return []
    median = float(torch.tensor([a.norm for a in accepted]).median())
    bound = factor * median
    return [
        (
            a,
            Rejected(
                RejectReason.NORM_RELATIVE, f"norm {a.norm:.4g} > {factor} x median {median:.4g}"
            ),
        )
        for a in accepted
        if a.norm > bound
    ]
